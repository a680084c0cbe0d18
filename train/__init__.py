"""Training entry point (`python -m train.main`), loop, checkpoints and metrics."""
