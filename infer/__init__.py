"""Public inference surface: `stream` (portrait + speech -> frames) and its options, the CLI, media I/O."""

from infer.options import StreamOptions, Style
from infer.streaming import stream

__all__ = ["StreamOptions", "Style", "stream"]
