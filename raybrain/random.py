r"""Counter-based Gaussian noise: a candidate's noise depends on (seed, stream, step, region) only.

Every normal variate is a pure function of its coordinates, so a candidate's result does not
depend on the batch it ran in or on how the run was chunked, the array and fused paths (and a
GPU kernel) draw identical noise, and *common random numbers* are just a shared stream.

For stream key ``k``, global step ``t`` and region ``i`` in a network of ``N`` regions:

.. math::

    c = tN + i,\quad z = \mathrm{fmix64}\big((c \cdot \varphi) \oplus k\big),\quad
    u_1 = (\lfloor z / 2^{32} \rfloor + \tfrac12)\,2^{-32},\quad u_2 = (z \bmod 2^{32})\,2^{-32}

and the Box–Muller pair (Box & Muller 1958)
``(ξ_0, ξ_1) = sqrt(-2 ln u_1) (cos 2πu_2, sin 2πu_2)``, one variate per noisy state variable.
``fmix64`` is the MurmurHash3 64-bit finaliser (a bijection with full avalanche) and ``φ`` the
64-bit golden-ratio constant. Tails are truncated at ``sqrt(2·33·ln 2) ≈ 6.8`` standard deviations
(probability < 1e-11 per draw). The key of stream ``s`` under seed ``seed`` is
``fmix64(fmix64(seed ⊕ C) + (s + 1) φ)``.
"""
from __future__ import annotations

import numpy as np

from ._backend import array_module

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_SEED_SALT = np.uint64(0x5DEECE66D1CE4E5B)
_S33 = np.uint64(33)
_S32 = np.uint64(32)
_LO32 = np.uint64(0xFFFFFFFF)
_TWO_M32 = 2.0 ** -32


def fmix64(z):
    """MurmurHash3's 64-bit finaliser on uint64 arrays or scalars (wrapping arithmetic)."""
    z = z ^ (z >> _S33)
    z = z * _M1
    z = z ^ (z >> _S33)
    z = z * _M2
    return z ^ (z >> _S33)


def stream_keys(seed: int, streams, xp=np):
    """uint64 keys ``(len(streams),)`` for noise streams under ``seed``.

    ``streams`` are non-negative integers naming each batch element's noise: ``arange(B)`` gives
    independent noise, all zeros gives common random numbers (CBIG, cuBNM).
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    s = np.asarray(streams)
    if s.ndim != 1 or (s.size and (not np.issubdtype(s.dtype, np.integer) or s.min() < 0)):
        raise ValueError("noise streams must be a 1-D array of non-negative integers")
    with np.errstate(over="ignore"):
        keys = keys_of_streams(seed_base(seed), s.astype(np.uint64))
    return xp.asarray(keys)


def seed_base(seed: int) -> np.uint64:
    """``fmix64(seed ⊕ C)``, the part of every stream key that depends on the seed only."""
    with np.errstate(over="ignore"):
        return fmix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF) ^ _SEED_SALT)


def keys_of_streams(base, streams):
    """``fmix64(base + (s + 1) φ)`` for uint64 ``streams`` of any array module (no checks; the
    validated entry point is :func:`stream_keys`)."""
    xp = array_module(streams)
    return fmix64(xp.asarray(base, dtype=xp.uint64) + (streams + xp.asarray(1, dtype=xp.uint64)) * xp.asarray(GOLDEN))


def normal_pair(keys, step: int, n: int, dtype=np.float64):
    """The two standard normals ``(ξ_0, ξ_1)``, each ``(B, N)``, of global step ``step``.

    ``keys`` is a ``(B,)`` uint64 array (NumPy or CuPy); computed in float64 and cast to ``dtype``.
    """
    xp = array_module(keys)
    ctr = (xp.arange(n, dtype=xp.uint64) + xp.uint64(step * n)) * GOLDEN
    z = fmix64(ctr[None, :] ^ keys[:, None])
    u1 = ((z >> _S32).astype(xp.float64) + 0.5) * _TWO_M32
    u2 = (z & _LO32).astype(xp.float64) * _TWO_M32
    r = xp.sqrt(-2.0 * xp.log(u1))
    angle = 2.0 * np.pi * u2
    return (r * xp.cos(angle)).astype(dtype, copy=False), (r * xp.sin(angle)).astype(dtype, copy=False)
