"""Tests for raybrain.features against independent references (numpy, scipy, explicit loops)."""
import numpy as np
import pytest
from scipy.stats import ks_2samp

from raybrain import features as F


def _loop_fcd(bold, window, step):
    """Straightforward reference: FC per window with np.corrcoef, then corrcoef of upper triangles."""
    T, N = bold.shape
    iu = np.triu_indices(N, 1)
    vecs = []
    start = 0
    while start + window <= T:
        vecs.append(np.corrcoef(bold[start:start + window].T)[iu])
        start += step
    W = len(vecs)
    out = np.empty((W, W))
    for a in range(W):
        for b in range(W):
            out[a, b] = np.corrcoef(vecs[a], vecs[b])[0, 1]
    return out


def test_upper_matches_triu_indices_and_batches():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((2, 3, 5, 5))
    u = F.upper(m)
    assert u.shape == (2, 3, 10)
    i, j = np.triu_indices(5, 1)
    np.testing.assert_array_equal(u[1, 2], m[1, 2][i, j])
    assert F.upper(m, k=0).shape == (2, 3, 15)
    with pytest.raises(ValueError, match="mat"):
        F.upper(np.zeros((3, 4)))


def test_fc_equals_corrcoef_per_batch_element():
    rng = np.random.default_rng(2)
    bold = rng.standard_normal((3, 50, 6)) + rng.standard_normal((3, 1, 6)) * 5.0
    bold[..., 1] += 0.8 * bold[..., 0]  # some real correlation
    out = F.fc(bold)
    assert out.shape == (3, 6, 6)
    for b in range(3):
        np.testing.assert_allclose(out[b], np.corrcoef(bold[b].T), atol=1e-13)


def test_fc_float32_input_works():
    rng = np.random.default_rng(3)
    bold = rng.standard_normal((2, 200, 5))
    out32 = F.fc(bold.astype(np.float32))
    assert np.all(np.isfinite(out32))
    for b in range(2):
        np.testing.assert_allclose(out32[b], np.corrcoef(bold[b].T), atol=1e-6)


def test_fc_identical_series_correlate_perfectly():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(100)
    bold = np.stack([x, 3.0 * x + 2.0, -x], axis=1)
    out = F.fc(bold)
    np.testing.assert_allclose(out, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-14)
    # the same FC compared with itself: r = 1
    big = F.fc(rng.standard_normal((80, 7)))
    assert F.corr_upper(big, big) == pytest.approx(1.0, abs=1e-14)


def test_fc_constant_region_gives_nan_row_and_column():
    rng = np.random.default_rng(5)
    bold = rng.standard_normal((40, 4))
    bold[:, 2] = 0.1  # constant (0.1 is not exact in binary: its mean has round-off)
    out = F.fc(bold)
    assert np.all(np.isnan(out[2])) and np.all(np.isnan(out[:, 2]))
    keep = [0, 1, 3]
    np.testing.assert_allclose(out[np.ix_(keep, keep)], np.corrcoef(bold[:, keep].T), atol=1e-13)


def test_corr_upper_and_mean_fc_against_numpy():
    rng = np.random.default_rng(6)
    a = F.fc(rng.standard_normal((2, 30, 6)))
    b = F.fc(rng.standard_normal((30, 6)))
    i, j = np.triu_indices(6, 1)
    for k in range(2):
        assert F.corr_upper(a[k], b) == pytest.approx(np.corrcoef(a[k][i, j], b[i, j])[0, 1], abs=1e-13)
        assert F.mean_fc(a)[k] == pytest.approx(a[k][i, j].mean(), abs=1e-15)
    # hand-checkable: mean of the upper triangle of [[1,.2,.4],[.2,1,.6],[.4,.6,1]] is 0.4
    m = np.array([[1, 0.2, 0.4], [0.2, 1, 0.6], [0.4, 0.6, 1.0]])
    assert F.mean_fc(m) == pytest.approx(0.4)


@pytest.mark.parametrize("T,window,step", [(40, 10, 1), (41, 12, 3), (25, 25, 1)])
def test_fcd_equals_loop_reference(T, window, step):
    rng = np.random.default_rng(7)
    bold = rng.standard_normal((T, 5)).cumsum(axis=0) * 0.3 + rng.standard_normal((T, 5))
    ref = _loop_fcd(bold, window, step)
    out = F.fcd(bold, window, step)
    W = (T - window) // step + 1
    assert out.shape == (W, W) == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-12)
    dist = F.fcd_distribution(bold, window, step)
    assert dist.shape == (W * (W - 1) // 2,)
    np.testing.assert_allclose(dist, np.sort(ref[np.triu_indices(W, 1)]), atol=1e-12)
    assert np.all(np.diff(dist) >= 0)


def test_fcd_batched_leading_axes_and_float32():
    rng = np.random.default_rng(8)
    bold = rng.standard_normal((2, 3, 30, 4))
    out = F.fcd(bold, 8, 2)
    assert out.shape == (2, 3, 12, 12)
    np.testing.assert_allclose(out[1, 2], _loop_fcd(bold[1, 2], 8, 2), atol=1e-12)
    out32 = F.fcd(bold.astype(np.float32), 8, 2)
    np.testing.assert_allclose(out32, out, atol=1e-5)


def _loop_window_fc(bold, window, step):
    """Reference: np.corrcoef of every window, upper triangle (k = 1)."""
    T, N = bold.shape
    iu = np.triu_indices(N, 1)
    return np.array([np.corrcoef(bold[s:s + window].T)[iu] for s in range(0, T - window + 1, step)])


@pytest.mark.parametrize(
    "T,N,window,step",
    [(200, 7, 23, 1), (211, 6, 30, 4), (150, 5, 17, 40), (64, 4, 64, 1), (50, 5, 2, 1), (97, 9, 96, 1)],
)
def test_window_fc_upper_equals_corrcoef_loop(T, N, window, step):
    """Block prefix/suffix sums give each window's FC to float rounding, whatever the step and
    T mod window, and a large offset plus drift (cancellation-prone for plain running sums)."""
    rng = np.random.default_rng(T + N)
    x = rng.standard_normal((2, 3, T, N))
    x[1] = 1e4 + np.cumsum(x[1], axis=-2) + 0.3 * x[1]  # offset and random-walk drift
    out = F.window_fc_upper(x, window, step)
    W = (T - window) // step + 1
    assert out.shape == (2, 3, W, N * (N - 1) // 2)
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(out[b, c], _loop_window_fc(x[b, c], window, step), rtol=0, atol=1e-10)


def test_window_fc_upper_constant_and_near_constant_windows():
    """A region constant in a window gives NaN pairs in exactly those windows (as fc does); a
    nearly constant one (tiny spread on a large value, where one-pass moments lose every digit)
    still gives the direct per-window correlation."""
    rng = np.random.default_rng(12)
    T, N, window = 160, 5, 25
    x = rng.standard_normal((T, N))
    x[40:100, 2] = 0.1  # exactly constant on [40, 100)
    x[90:140, 3] = 7.0 + 1e-9 * rng.standard_normal(50)  # spread 1e-9 on a value of 7
    out = F.window_fc_upper(x, window, 1)
    iu, ju = np.triu_indices(N, 1)
    has2 = (iu == 2) | (ju == 2)
    for s in range(T - window + 1):
        w = x[s:s + window]
        inside = 40 <= s and s + window <= 100
        assert np.all(np.isnan(out[s, has2])) == inside
        assert np.all(np.isfinite(out[s, ~has2])) and (inside or np.all(np.isfinite(out[s])))
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = np.corrcoef(w.T)[iu, ju]
        ok = np.isfinite(out[s])
        np.testing.assert_allclose(out[s, ok], F.fc(w)[iu, ju][ok], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[s, ok], ref[ok], rtol=0, atol=1e-6)  # 1e-9 spread: ~7 digits
    # the near-constant region is genuinely correlated with nothing: |r| well below 1 somewhere
    assert np.nanmax(np.abs(out[90:116][:, (iu == 3) | (ju == 3)])) < 0.99


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(window=31, step=1), "window"),  # window > T = 30
        (dict(window=1, step=1), "window"),
        (dict(window=10, step=0), "step"),
        (dict(window=10, step=-2), "step"),
        (dict(window=10.5, step=1), "window"),
        (dict(window=10, step=1.0), "step"),
    ],
)
def test_fcd_bad_window_or_step_raises_naming_argument(kwargs, name):
    bold = np.random.default_rng(0).standard_normal((30, 4))
    with pytest.raises(ValueError, match=name):
        F.fcd(bold, **kwargs)
    with pytest.raises(ValueError, match=name):
        F.fcd_distribution(bold, **kwargs)


def test_ks_matches_scipy_continuous_unequal_sizes():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((6, 137))
    b = rng.standard_normal(91) * 1.3 + 0.2
    out = F.ks_distance(a, b)
    assert out.shape == (6,)
    for k in range(6):
        assert out[k] == pytest.approx(ks_2samp(a[k], b).statistic, abs=1e-14)


def test_ks_matches_scipy_with_ties_and_batched_b():
    rng = np.random.default_rng(10)
    a = rng.integers(0, 8, size=(2, 3, 50)).astype(float)
    b = rng.integers(1, 10, size=(2, 3, 23)).astype(float)
    out = F.ks_distance(a, b)
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert out[i, j] == pytest.approx(ks_2samp(a[i, j], b[i, j]).statistic, abs=1e-14)
    # ties shared across both samples: a = [0,0,1,1], b = [0,1,1,1]: CDFs at 0 are 1/2 and 1/4
    assert F.ks_distance(np.array([0.0, 0, 1, 1]), np.array([0.0, 1, 1, 1])) == pytest.approx(0.25)


def test_ks_known_values():
    x = np.linspace(-0.5, 0.5, 40)
    assert F.ks_distance(x, x.copy()) == 0.0
    assert F.ks_distance(x, x + 2.0) == 1.0  # fully apart
    assert F.ks_distance(x + 2.0, x) == 1.0
    assert np.isnan(F.ks_distance(np.array([0.1, np.nan]), x))


def test_ks_histogram_variant():
    rng = np.random.default_rng(11)
    bins = 100
    centres = -1 + (np.arange(bins) + 0.5) * (2 / bins)
    # samples that sit on bin centres: the binned CDFs are the exact CDFs
    a = centres[rng.integers(0, bins, size=(3, 300))]
    b = centres[rng.integers(20, bins, size=250)]
    np.testing.assert_allclose(F.ks_distance(a, b, bins=bins), F.ks_distance(a, b), atol=1e-14)
    # continuous samples: differs from the exact statistic by at most a few bins' mass
    c = np.tanh(rng.standard_normal(2000) * 0.4)
    d = np.tanh(rng.standard_normal(1500) * 0.4 + 0.1)
    assert F.ks_distance(c, d, bins=10000) == pytest.approx(ks_2samp(c, d).statistic, abs=2e-3)
    with pytest.raises(ValueError, match="bins"):
        F.ks_distance(c, d, bins=0)


def test_plausible_and_ei_ratio():
    r = np.array([[3.0, 2.7, 3.3], [3.0, 2.69, 3.0], [3.0, 3.0, np.nan], [2.6, 3.4, 3.0]])
    np.testing.assert_array_equal(F.plausible(r), [True, False, False, False])
    np.testing.assert_array_equal(F.plausible(r, *F.PLAUSIBLE_RATE_RELAXED_HZ), [True, True, False, True])
    with pytest.raises(ValueError, match="low"):
        F.plausible(r, 3.5, 2.5)
    se = np.array([[0.2, 0.3], [0.1, 0.5]])
    si = np.array([[0.1, 0.6], [0.05, 0.25]])
    np.testing.assert_allclose(F.ei_ratio(se, si), [[2.0, 0.5], [2.0, 2.0]])
