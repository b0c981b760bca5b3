"""Tests of raybrain.random: counter-based Gaussian noise (fmix64 + Box–Muller)."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from scipy import stats

from raybrain import random as rr
from raybrain.fused import _normals32, _normals64


def test_fmix64_known_values():
    # fmix64(0) = 0; other values against MurmurHash3's finaliser written with Python integers
    assert int(rr.fmix64(np.uint64(0))) == 0
    def ref(z):
        m = (1 << 64) - 1
        z ^= z >> 33
        z = (z * 0xFF51AFD7ED558CCD) & m
        z ^= z >> 33
        z = (z * 0xC4CEB9FE1A85EC53) & m
        return z ^ (z >> 33)
    xs = np.array([1, 2, 12345, 2 ** 63 + 7, 2 ** 64 - 1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        out = rr.fmix64(xs)
    assert [int(v) for v in out] == [ref(int(v)) for v in xs]
    # a bijection: distinct inputs give distinct outputs
    big = np.arange(100_000, dtype=np.uint64)
    with np.errstate(over="ignore"):
        assert np.unique(rr.fmix64(big)).size == big.size


def test_stream_keys():
    k = rr.stream_keys(3, np.arange(5))
    assert k.dtype == np.uint64 and k.shape == (5,) and np.unique(k).size == 5
    np.testing.assert_array_equal(rr.stream_keys(3, [2, 2, 0]), k[[2, 2, 0]])
    assert not np.array_equal(rr.stream_keys(4, np.arange(5)), k)
    with pytest.raises(ValueError, match="seed"):
        rr.stream_keys(-1, [0])
    with pytest.raises(ValueError, match="streams"):
        rr.stream_keys(0, [-1, 0])
    with pytest.raises(ValueError, match="streams"):
        rr.stream_keys(0, [0.5])


@pytest.fixture(scope="module")
def draws():
    keys = rr.stream_keys(20240607, np.arange(500))
    xs, ys = [], []
    for step in (0, 1, 10**6):
        x, y = rr.normal_pair(keys, step, 700)
        xs.append(x)
        ys.append(y)
    return keys, np.stack(xs), np.stack(ys)  # (3, 500, 700) each: ~1.05e6 draws


def test_normal_pair_statistics(draws):
    _, x, y = draws
    n = x.size
    for z in (x, y):
        assert abs(z.mean()) < 5 / np.sqrt(n)
        assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)
        assert abs(stats.skew(z.ravel())) < 5 * np.sqrt(6.0 / n)
        assert abs(stats.kurtosis(z.ravel())) < 5 * np.sqrt(24.0 / n)
        assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    # the two members of the pair, neighbouring regions, streams and steps are uncorrelated
    tol = 5 / np.sqrt(n)
    assert abs(np.corrcoef(x.ravel(), y.ravel())[0, 1]) < tol
    assert abs(np.corrcoef(x[:, :, 1:].ravel(), x[:, :, :-1].ravel())[0, 1]) < 2 * tol
    assert abs(np.corrcoef(x[:, 1:].ravel(), x[:, :-1].ravel())[0, 1]) < 2 * tol
    assert abs(np.corrcoef(x[1].ravel(), x[0].ravel())[0, 1]) < 2 * tol
    # (x^2 + y^2)/2 ~ Exp(1) for a Box–Muller pair
    assert stats.kstest(((x ** 2 + y ** 2) / 2).ravel(), "expon").pvalue > 1e-3


def test_normal_pair_is_a_pure_function_of_its_coordinates(draws):
    keys, x, y = draws
    # any subset of streams, in any order, gives the same numbers (batch independence)
    sub = [7, 3, 499]
    x1, y1 = rr.normal_pair(keys[sub], 1, 700)
    np.testing.assert_array_equal(x1, x[1, sub])
    np.testing.assert_array_equal(y1, y[1, sub])
    # the same stream number under the same seed: the same numbers
    x2, _ = rr.normal_pair(rr.stream_keys(20240607, [3]), 10**6, 700)
    np.testing.assert_array_equal(x2[0], x[2, 3])
    # float32 output is the rounded float64 value
    x32, y32 = rr.normal_pair(keys[:4], 0, 700, dtype=np.float32)
    assert x32.dtype == np.float32
    np.testing.assert_array_equal(x32, x[0, :4].astype(np.float32))
    # different steps, streams: different numbers
    assert not np.any(x[0] == x[1])


@njit
def _fused_normals(zs, out32, out64):
    for i in range(zs.size):
        a, b = _normals32(zs[i])
        out32[0, i] = a
        out32[1, i] = b
        c, d = _normals64(zs[i])
        out64[0, i] = c
        out64[1, i] = d


def test_fused_normals_match_normal_pair():
    keys = rr.stream_keys(11, np.arange(40))
    n, step = 2000, 12345
    x, y = rr.normal_pair(keys, step, n)
    # the counters the fused kernel hashes, built here from the documented formula
    ctr = (np.arange(n, dtype=np.uint64) + np.uint64(step * n)) * rr.GOLDEN
    with np.errstate(over="ignore"):
        z = rr.fmix64(ctr[None, :] ^ keys[:, None]).ravel()
    o32 = np.empty((2, z.size), np.float32)
    o64 = np.empty((2, z.size), np.float64)
    _fused_normals(z, o32, o64)
    ref = np.stack([x.ravel(), y.ravel()])
    np.testing.assert_allclose(o64, ref, rtol=1e-12, atol=1e-13)
    err = np.abs(o32.astype(np.float64) - ref)
    assert np.all(err <= 1e-5 * np.maximum(1.0, np.abs(ref)))
