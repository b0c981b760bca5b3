"""Tests of raybrain._fastmath: the vectorisable float32 exp/log/sincos/phi of the fused loop,
against NumPy's float64 functions on dense grids."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from raybrain._fastmath import exp32, log32, phi32, phi64, sincos_turns32
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
