"""Array-module helpers: raybrain's physics is written once over ``xp`` (NumPy, CuPy or JAX).

The array module is always taken from the inputs, never from a global switch, so the same
function runs on host arrays in CI, on device arrays on a GPU, and on JAX arrays (concrete or
traced by ``jax.jit`` / ``jax.grad``) in the differentiable simulator of
:mod:`raybrain.jax_backend`. Neither CuPy nor JAX is imported to recognise an array: an array
of a library that was never imported cannot exist.
"""
from __future__ import annotations

import sys

import numpy as np

BACKENDS = ("numpy", "cupy", "jax")


def _cupy():
    try:
        import cupy  # noqa: F401  (optional ``gpu`` extra)
    except Exception:  # pragma: no cover - depends on the machine
        return None
    return cupy


def _jax_numpy(a):
    """``jax.numpy`` if ``a`` is a JAX array or tracer (JAX already imported), else None."""
    jax = sys.modules.get("jax")
    Array = getattr(jax, "Array", None)
    if Array is not None and isinstance(a, Array):
        import jax.numpy as jnp

        return jnp
    return None


def array_module(*arrays):
    """The array module of ``arrays``: ``cupy`` if any is a CuPy array, ``jax.numpy`` if any is a
    JAX array (``jax.Array``, tracers included), else ``numpy``."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            cp = _cupy()
            if cp is not None:
                return cp
        elif mod.startswith("jax"):  # jaxlib's ArrayImpl, jax._src's tracers
            jnp = _jax_numpy(a)
            if jnp is not None:
                return jnp
    return np


def asnumpy(x):
    """Return ``x`` as a NumPy array (copies from the GPU if ``x`` is a CuPy array)."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def get_xp(backend: str):
    """The array module for a backend name: ``"numpy"``, ``"cupy"`` or ``"jax"`` (``jax.numpy``, with
    ``jax_enable_x64`` on: the noise of :mod:`raybrain.random` needs uint64; the array path of
    :class:`raybrain.integrate.Simulation` then runs eagerly on JAX arrays)."""
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
    if backend == "jax":
        try:
            import jax
            import jax.numpy as jnp
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ValueError("backend='jax' needs JAX: pip install 'raybrain[jax]'") from exc
        if not jax.config.jax_enable_x64:  # the counter-based noise (raybrain.random) hashes uint64
            raise ValueError("backend='jax' needs 64-bit JAX: jax.config.update('jax_enable_x64', True)")
        return jnp
    raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
