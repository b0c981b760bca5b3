"""Tests of raybrain._fastmath: the vectorisable float32 exp/log/sincos/phi of the fused loop,
against NumPy's float64 functions on dense grids."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from raybrain._fastmath import (box_muller64v, exp32, exp64, halves64, log32, log64, phi32, phi64, phi64v,
                               sincos_turns32, sincos_turns64)
from raybrain.models.rww import phi


# error_model="numpy" as in the fused kernel: phi32 evaluates both branches, so its unused
# "exact" branch divides 0/0 at z = 0 (under the default python error model numba raises)
@njit(error_model="numpy")
def _apply(xs, which):
    out = np.empty((2, xs.size), np.float32)
    for i in range(xs.size):
        x = xs[i]
        if which == 0:
            out[0, i] = exp32(x)
        elif which == 1:
            out[0, i] = log32(x)
        elif which == 2:
            s, c = sincos_turns32(x)
            out[0, i] = s
            out[1, i] = c
        else:
            out[0, i] = phi32(x)
    return out


@njit
def _apply64(xs):
    out = np.empty_like(xs)
    for i in range(xs.size):
        out[i] = phi64(xs[i])
    return out


def _rel(a, ref):
    return np.abs(a.astype(np.float64) - ref) / np.abs(ref)


def test_exp32():
    x = np.linspace(-80.0, 80.0, 400_001).astype(np.float32)
    got = _apply(x, 0)[0]
    ref = np.exp(x.astype(np.float64))
    assert _rel(got, ref).max() < 1e-6
    # exact at 0, and the integer-power-of-two scaling is right at the ends
    assert _apply(np.array([0.0, 1.0, -1.0], np.float32), 0)[0][0] == 1.0


def test_log32():
    x = np.concatenate([np.logspace(-30, 30, 200_001), np.linspace(0.5, 2.0, 200_001),
                        [1.0, 2.0, 0.5, np.sqrt(2.0)]]).astype(np.float32)
    got = _apply(x, 1)[0].astype(np.float64)
    ref = np.log(x.astype(np.float64))
    big = np.abs(ref) > 1.0
    assert (np.abs(got - ref)[big] / np.abs(ref[big])).max() < 1e-6
    assert np.abs(got - ref)[~big].max() < 1e-6
    assert got[-4] == 0.0  # log 1


def test_sincos_turns32():
    u = np.linspace(0.0, 1.0, 400_001).astype(np.float32)
    out = _apply(u, 2)
    ang = 2 * np.pi * u.astype(np.float64)
    assert np.abs(out[0] - np.sin(ang)).max() < 1e-6
    assert np.abs(out[1] - np.cos(ang)).max() < 1e-6
    # quadrant boundaries land on the right signs
    q = _apply(np.array([0.0, 0.25, 0.5, 0.75], np.float32), 2)
    np.testing.assert_allclose(q[0], [0, 1, 0, -1], atol=1e-7)
    np.testing.assert_allclose(q[1], [1, 0, -1, 0], atol=1e-7)


def test_phi32_and_phi64():
    z = np.concatenate([np.linspace(-60.0, 60.0, 200_001), np.linspace(-1e-3, 1e-3, 20_001),
                        np.linspace(0.49, 0.51, 20_001), np.linspace(-0.51, -0.49, 20_001), [0.0]])
    z32 = z.astype(np.float32)
    ref = phi(z32.astype(np.float64))
    got = _apply(z32, 3)[0]
    assert np.all(np.isfinite(got))
    assert _rel(got, ref).max() < 2e-6
    assert got[-1] == 1.0
    # the float64 scalar version used by the fused float64 loop is the array formula to rounding
    np.testing.assert_allclose(_apply64(z), phi(z), rtol=1e-14)
    # and phi has the right limit/asymptote: phi(0) = 1, phi(z) ~ z for large z
    assert phi(np.float64(0.0)) == 1.0
    assert phi(np.float64(50.0)) == pytest.approx(50.0, rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lanes", [4, 8, 16])
@pytest.mark.parametrize("m, k", [(80, 80), (7, 5), (13, 80), (1, 3)])
def test_lane_matmul_equals_numpy(dtype, lanes, m, k):
    """The hand-written LLVM register-blocked C @ X (the tiles' network input) against NumPy,
    including row counts that are not a multiple of the 4-row block."""
    from numba import njit

    from raybrain._fastmath import lane_matmul

    mm = lane_matmul(lanes)

    @njit
    def call(C, X, out):
        mm(C, X, out)

    rng = np.random.default_rng(m * 100 + k + lanes)
    C = rng.random((m, k)).astype(dtype)
    X = rng.random((k, lanes)).astype(dtype)
    out = np.full((m, lanes), np.nan, dtype)
    call(C, X, out)
    ref = C.astype(np.float64) @ X.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_matvec_equals_lane_matmul_per_lane(dtype):
    """The one-lane network sum (column_matvec on C transposed) is, bit for bit, each lane of the
    register-blocked lane_matmul: the tiled kernel then gives a batch element the same results
    whatever its tile width."""
    from raybrain._fastmath import column_matvec, lane_matmul

    rng = np.random.default_rng(3)
    n, lanes = 83, 8  # n not a multiple of the row block: the remainder rows are covered too
    C = rng.uniform(0, 0.02, (n, n)).astype(dtype)
    X = rng.uniform(0, 1, (n, lanes)).astype(dtype)
    mm = lane_matmul(lanes, 4)

    @njit
    def both(C, X, out, CT, col, one):
        mm(C, X, out)
        for l in range(X.shape[1]):
            for j in range(X.shape[0]):
                col[j] = X[j, l]
            column_matvec(CT, col, one[l])

    out = np.empty((n, lanes), dtype)
    one = np.empty((lanes, n), dtype)
    both(C, X, out, np.ascontiguousarray(C.T), np.empty(n, dtype), one)
    np.testing.assert_array_equal(one.T, out)
    ref = C.astype(np.float64) @ X.astype(np.float64)
    np.testing.assert_allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-13)


# -- float64 --------------------------------------------------------------------------------------
# References in extended precision (x87 80-bit long double: 64-bit mantissa, 2^11 times finer than
# float64), so the measured error is the float64 function's own, in ulps of the exact value.
_LD = np.longdouble
_needs_ld = pytest.mark.skipif(np.finfo(np.longdouble).nmant < 60, reason="long double is float64 here")


@njit(error_model="numpy")
def _apply_f64(xs, which):
    out = np.empty((2, xs.size))
    for i in range(xs.size):
        x = xs[i]
        if which == 0:
            out[0, i] = exp64(x)
        elif which == 1:
            out[0, i] = log64(x)
        elif which == 2:
            s, c = sincos_turns64(x)
            out[0, i] = s
            out[1, i] = c
        else:
            out[0, i] = phi64v(x)
    return out


def _ulps(got, ref):
    """|got - ref| in units of the float64 spacing at the exact value ``ref`` (long double)."""
    return np.asarray(np.abs(got.astype(_LD) - ref) / np.spacing(np.abs(ref.astype(np.float64))), np.float64)


@_needs_ld
def test_exp64_within_one_ulp():
    """exp64 (Cody–Waite + degree-13 polynomial) within 1 ulp of exp on [-708, 709]; exact at 0;
    clamped to exp(-708), exp(709) outside."""
    x = np.concatenate([np.linspace(-708.0, 709.0, 1_000_001), np.linspace(-1.0, 1.0, 400_001),
                        np.linspace(-0.35, 0.35, 200_001)])  # |r| <= ln2/2: the polynomial alone
    ulps = _ulps(_apply_f64(x, 0)[0], np.exp(x.astype(_LD)))
    assert ulps.max() < 1.0
    assert np.mean(ulps < 0.5) > 0.9  # mostly correctly rounded
    ends = _apply_f64(np.array([0.0, -1000.0, 1000.0, 709.0, -708.0]), 0)[0]
    assert ends[0] == 1.0
    assert ends[1] == ends[4] and ends[2] == ends[3]
    np.testing.assert_allclose(ends[3:], [np.exp(709.0), np.exp(-708.0)], rtol=3e-16)


@_needs_ld
def test_log64_within_one_ulp():
    """log64 (bits for the exponent, fdlibm's atanh minimax on [√½, √2)) within 1 ulp of log on
    [1e-300, 1e300], densely on [0.5, 2] and around 1 where log x ≈ x - 1 is small."""
    x = np.concatenate([np.logspace(-300, 300, 1_000_001), np.linspace(0.5, 2.0, 1_000_001),
                        np.linspace(1 - 1e-6, 1 + 1e-6, 100_001), [np.sqrt(0.5), np.sqrt(2.0), 2.0 ** -1022]])
    x = x[x != 1.0]
    ulps = _ulps(_apply_f64(x, 1)[0], np.log(x.astype(_LD)))
    assert ulps.max() < 1.0
    special = _apply_f64(np.array([1.0, 2.0, 0.5, 1024.0]), 1)[0]
    assert special[0] == 0.0
    np.testing.assert_array_equal(special[1:], [np.log(2.0), -np.log(2.0), 10 * np.log(2.0)])


@_needs_ld
def test_sincos_turns64_absolute_error():
    """(sin 2πu, cos 2πu) within 2.5e-16 absolute on [0, 1] (NumPy's sin(2π u) in float64 is off by
    up to 7e-16 from rounding 2πu), and exact at the quadrant boundaries."""
    u = np.concatenate([np.linspace(0.0, 1.0, 1_000_001), np.random.default_rng(2).random(500_000)])
    a = 2 * (4 * np.arctan(_LD(1))) * u.astype(_LD)
    got = _apply_f64(u, 2)
    assert np.abs(got[0] - np.sin(a)).max() < 2.5e-16
    assert np.abs(got[1] - np.cos(a)).max() < 2.5e-16
    q = _apply_f64(np.array([0.0, 0.25, 0.5, 0.75, 1.0]), 2)
    np.testing.assert_array_equal(q[0], [0, 1, 0, -1, 0])
    np.testing.assert_array_equal(q[1], [1, 0, -1, 0, 1])


@_needs_ld
def test_phi64v_relative_error():
    """phi(z) = z / (1 - e^-z): its Bernoulli series for |z| < 0.5, z / (1 - exp64(-z)) beyond,
    within 5e-16 relative of the exact value on [-50, 50], around the switch at ±0.5, near 0, and
    to ±700; phi(0) = 1."""
    z = np.concatenate([np.linspace(-50.0, 50.0, 1_000_001), np.linspace(-1e-3, 1e-3, 100_001),
                        np.linspace(0.45, 0.55, 100_001), np.linspace(-0.55, -0.45, 100_001),
                        np.linspace(-700.0, 700.0, 100_001)])
    z = z[z != 0.0]
    zl = z.astype(_LD)
    ref = zl / -np.expm1(-zl)
    got = _apply_f64(z, 3)[0]
    assert np.all(np.isfinite(got))
    assert np.asarray(np.abs(got - ref) / np.abs(ref), np.float64).max() < 5e-16
    assert _apply_f64(np.array([0.0]), 3)[0, 0] == 1.0


def test_normals64_from_hash_bits():
    """halves64 splits a uint64 exactly; box_muller64v agrees with the libm Box–Muller of the
    fused float64 loop to rounding (|n| < 7, so 4e-15 is a few ulps)."""
    from raybrain.fused import _box_muller64, _halves64

    @njit(error_model="numpy")
    def both(zs):
        out = np.empty((6, zs.size))
        for i in range(zs.size):
            hi, lo = halves64(zs[i])
            out[0, i], out[1, i] = hi, lo
            out[2, i], out[3, i] = box_muller64v(hi, lo)
            h, l = _halves64(zs[i])
            out[4, i], out[5, i] = _box_muller64(h, l)
        return out

    z = np.random.default_rng(5).integers(0, 2 ** 63, 200_000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    z = np.concatenate([z, np.array([0, 2 ** 64 - 1, 2 ** 32 - 1, 2 ** 32], np.uint64)])
    out = both(z)
    np.testing.assert_array_equal(out[0], (z >> np.uint64(32)).astype(np.float64))
    np.testing.assert_array_equal(out[1], (z & np.uint64(0xFFFFFFFF)).astype(np.float64))
    np.testing.assert_allclose(out[2:4], out[4:6], rtol=0, atol=4e-15)
    assert np.all(np.isfinite(out[2:4]))


@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_float64_same_bits_at_any_vector_width(which):
    """A value computed in the vectorised loop equals, bit for bit, the same function called on one
    element at a time (scalar code): explicit fused multiply–adds, no width-dependent rounding."""

    @njit(error_model="numpy")
    def one(x):
        return _apply_f64(np.array([x]), which)[:, 0]

    rng = np.random.default_rng(which)
    x = [rng.uniform(-700, 700, 64), rng.uniform(1e-3, 1e3, 64), rng.random(64), rng.uniform(-2, 2, 64)][which]
    loop = _apply_f64(x, which)
    single = np.stack([one(v) for v in x], axis=1)
    np.testing.assert_array_equal(loop[0], single[0])
    if which == 2:
        np.testing.assert_array_equal(loop[1], single[1])


def test_exp64_loop_vectorises():
    """The loop ``out[k] = exp64(x[k])`` compiles to packed double-precision arithmetic (ymm/zmm
    registers) with no call into libm: the point of exp64 over np.exp."""
    import re

    from llvmlite import binding

    features = binding.get_host_cpu_features()
    if not features.get("avx2", False):
        pytest.skip("the host CPU lacks AVX2")

    @njit(error_model="numpy")
    def loop(x, out):
        for k in range(x.size):
            out[k] = exp64(x[k])

    x = np.linspace(-5.0, 5.0, 101)
    out = np.empty_like(x)
    loop(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=3e-16)
    asm = "\n".join(loop.inspect_asm().values())
    assert re.search(r"v(fmadd\w*|mul)pd\s+[^\n]*%[yz]mm", asm)
    # np.exp would appear as llvm.exp (8 libm calls per <8 x double> after vectorisation)
    assert not re.search(r"@(llvm\.)?exp", "\n".join(loop.inspect_llvm().values()))
