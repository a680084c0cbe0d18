"""Public inference surface: streaming generation, the CLI and media I/O."""

from infer.stream import stream

__all__ = ["stream"]
