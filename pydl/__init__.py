"""pydl: fast, dependable dense neural networks on the CPU.

>>> import pydl
>>> X, y = pydl.datasets.load_digits()
>>> model = pydl.mlp([64, 128, 10], batchnorm=True, seed=0)
>>> history = model.fit(X / 16, y, optimizer=pydl.optim.Adam(), epochs=20, verbose=0)
"""
import os as _os

# OpenMP threads that spin after a parallel region steal the cores from other pools'
# workers (NumPy's OpenBLAS, and SciPy's before pydl ran its products on its own team):
# alternating GEMMs and fused elementwise kernels ran 20x slower on 2 cores. Sleeping at
# once fixes it. libgomp reads this when it loads, i.e. with _core below; a value the user
# set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    from . import _core  # noqa: E402,F401  (load the extension first)
except ImportError as _err:
    import importlib.util as _util

    _here = _os.path.dirname(__file__)
    if _util.find_spec(f"{__name__}._core") is None:  # not a broken core: no core at all
        raise ImportError(
            f"pydl's compiled core (pydl._core) is not in {_here}: that is a source tree, not "
            "an installed pydl (Python imports it first when it runs in the checkout). Run "
            "from another directory after `pip install .`, or build in place with "
            "`pip install -e .`") from _err
    raise
from . import (averages, callbacks, data, datasets, diagnose, ensemble, gradcheck, init, losses,
               nn, ops, optim, schedules)
from .averages import ewa
from .callbacks import History
from .model import Sequential, load, mlp
from .ops import get_num_threads, set_num_threads
from .training import TrainingDiverged

__version__ = "0.1.0"

_LAZY = ("plot", "tune", "sklearn", "cli", "config")


def __getattr__(name):
    # Modules with optional dependencies (matplotlib, dask, scikit-learn) load on first use.
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Sequential", "mlp", "load", "History", "TrainingDiverged", "ewa",
    "set_num_threads", "get_num_threads",
    "nn", "optim", "losses", "init", "ops", "schedules", "callbacks", "data", "datasets",
    "gradcheck", "diagnose", "ensemble", "averages", "plot", "tune", "sklearn",
]
