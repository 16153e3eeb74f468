"""pydl: fast, dependable dense neural networks on the CPU.

>>> import pydl
>>> model = pydl.mlp([64, 128, 10], batchnorm=True, seed=0)
>>> history = model.fit(X, y, optimizer=pydl.optim.Adam(), epochs=20)  # doctest: +SKIP
"""
from . import _core  # noqa: F401  (load the extension first)
from . import callbacks, init, losses, nn, ops, optim, schedules
from .callbacks import History
from .model import Sequential, load, mlp
from .ops import get_num_threads, set_num_threads
from .training import TrainingDiverged

__version__ = "0.1.0"

__all__ = [
    "Sequential", "mlp", "load", "History", "TrainingDiverged",
    "set_num_threads", "get_num_threads",
    "nn", "optim", "losses", "init", "ops", "schedules", "callbacks",
]
