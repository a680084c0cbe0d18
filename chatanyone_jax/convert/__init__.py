"""Checkpoint converters: PyTorch weights -> chatanyone_jax variables.

`chatanyone_jax.convert.liveportrait`: LivePortrait's F, M, W, G and stitching / retargeting MLPs
(also a command line: `python -m chatanyone_jax.convert.liveportrait --help`).
"""
