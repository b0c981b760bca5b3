"""Array-module helpers: raybrain's physics is written once over ``xp`` (NumPy or CuPy).

The array module is always taken from the inputs, never from a global switch, so the same
function runs on host arrays in CI and on device arrays on a GPU.
"""
from __future__ import annotations

import numpy as np


def _cupy():
    try:
        import cupy  # noqa: F401  (optional ``gpu`` extra)
    except Exception:  # pragma: no cover - depends on the machine
        return None
    return cupy


def array_module(*arrays):
    """Return ``cupy`` if any of ``arrays`` is a CuPy array, else ``numpy``."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            cp = _cupy()
            if cp is not None:
                return cp
    return np


def asnumpy(x):
    """Return ``x`` as a NumPy array (copies from the GPU if ``x`` is a CuPy array)."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def get_xp(backend: str):
    """The array module for a backend name: ``"numpy"`` or ``"cupy"``."""
    if backend == "numpy":
        return np
    if backend == "cupy":
        cp = _cupy()
        if cp is None:
            raise ValueError(
                "backend='cupy' needs CuPy: install raybrain with the 'gpu' extra "
                "(pip install 'raybrain[gpu]') on a machine with a CUDA GPU"
            )
        return cp
    raise ValueError(f"backend must be 'numpy' or 'cupy', got {backend!r}")
