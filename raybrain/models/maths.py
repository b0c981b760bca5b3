r"""The maths a model's scalar drift may call, over arrays (NumPy, CuPy, JAX).

A scalar drift (:attr:`raybrain.models.Model.scalar_drift`) takes its transcendental functions as
arguments, named in ``kernel_functions``, so each backend passes its own in its own precision:
these array versions here, vectorisable float32 polynomials or libm in the numba kernels
(:mod:`raybrain.fused`), CUDA's functions in the generated CUDA source (:mod:`raybrain.cuda`).

* ``exp``, ``log``: the array module's.
* ``phi``: :math:`\varphi(z) = z / (1 - e^{-z})` with its removable singularity at 0 filled:
  ``-expm1(-z)`` in the denominator, the series :math:`1 + z/2 + z^2/12` for :math:`|z| < 10^{-6}`.
"""
from __future__ import annotations

import numpy as np

from .._backend import array_module

SERIES_EPS = 1e-6


def phi(z):
    """``z / (1 - exp(-z))`` with its removable singularity at 0 filled (array or scalar)."""
    xp = array_module(z)
    z = xp.asarray(z)
    small = xp.abs(z) < SERIES_EPS
    safe = xp.where(small, 1.0, z)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        exact = safe / (-xp.expm1(-safe))
    return xp.where(small, 1.0 + 0.5 * z + z * z / 12.0, exact)


def exp(x):
    return array_module(x).exp(x)


def log(x):
    return array_module(x).log(x)


FUNCTIONS = {"exp": exp, "log": log, "phi": phi}


def array_functions(names) -> tuple:
    """The array implementations of the functions ``names`` (see the module docstring)."""
    try:
        return tuple(FUNCTIONS[n] for n in names)
    except KeyError as e:
        raise ValueError(f"unknown kernel function {e.args[0]!r}; known: {sorted(FUNCTIONS)}") from None
