"""pydl: fast, dependable dense neural networks on the CPU."""
from . import _core  # noqa: F401  (load the extension first)
