"""Option text -> values, for the commands: the parsers live in `bridge.options`, where `bridge
batch`'s matrix file reads the same spellings."""

from bridge.options import floats, memory, size

__all__ = ["floats", "memory", "size"]
