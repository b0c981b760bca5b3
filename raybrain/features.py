"""Features of simulated and empirical BOLD: FC, FCD, KS distance, firing-rate summaries.

Every function is batched over leading axes (B first) and written over the array module ``xp``
of its inputs, so it runs unchanged on NumPy and CuPy arrays. On NumPy, correlations are computed
in float64 whatever the input dtype; on CuPy, float32 input stays float32 (speed) and anything
else is computed in float64.

References
----------
- FC: Pearson correlation of regional BOLD series, compared on upper triangles (k = 1).
- FCD: Hansen et al. 2015, NeuroImage 105:525 ("Functional connectivity dynamics"); window
  settings as in the CBIG pMFM/pFIC code (Kong et al. 2021; Zhang et al. 2024): 83 TRs, step 1.
- KS: two-sample Kolmogorov–Smirnov statistic between FCD distributions (Kong et al. 2021).
- Plausibility and E/I ratio: Zhang et al. 2024 (pFIC).
"""
from __future__ import annotations

import numpy as np

from raybrain._backend import array_module

__all__ = [
    "upper",
    "fc",
    "corr_upper",
    "mean_fc",
    "window_starts",
    "n_windows",
    "window_fc_upper",
    "fcd",
    "fcd_distribution",
    "ks_distance",
    "plausible",
    "ei_ratio",
    "PLAUSIBLE_RATE_HZ",
    "PLAUSIBLE_RATE_RELAXED_HZ",
]

#: Zhang et al. 2024 pFIC: every region's time-averaged r_E must lie in this range (Hz).
PLAUSIBLE_RATE_HZ = (2.7, 3.3)
#: The relaxed variant used in Zhang et al. 2024 (Hz).
PLAUSIBLE_RATE_RELAXED_HZ = (2.5, 3.5)


def _work_dtype(xp, x):
    """float64 on NumPy; on CuPy keep float32 input as float32, else float64."""
    if xp is np:
        return np.float64
    return xp.float32 if x.dtype == xp.float32 else xp.float64


def upper(mat, k: int = 1):
    """Upper-triangle entries of the last two axes: (..., N, N) -> (..., N(N-1)/2) for k = 1.

    The order is NumPy's row-major ``triu_indices(N, k)`` order.
    """
    xp = array_module(mat)
    if mat.ndim < 2 or mat.shape[-1] != mat.shape[-2]:
        raise ValueError(f"mat must have shape (..., N, N), got {tuple(mat.shape)}")
    iu, ju = np.triu_indices(mat.shape[-1], k)
    if xp is not np:
        iu, ju = xp.asarray(iu), xp.asarray(ju)
    return mat[..., iu, ju]


def fc(bold):
    """Functional connectivity: Pearson correlation matrices of the regional series.

    ``bold`` has shape (..., T, N) (time then regions); the result has shape (..., N, N)::

        FC_ij = sum_t (x_ti - mean_i)(x_tj - mean_j) / sqrt(sum_t (x_ti - mean_i)^2 sum_t (x_tj - mean_j)^2)

    Entries are clipped to [-1, 1]. A region whose series has zero variance (constant, up to
    round-off of 1e-12 relative to its magnitude) has an undefined correlation: its whole row and
    column are NaN (the diagonal entry too). Losses treat such an FC as invalid.
    """
    xp = array_module(bold)
    if bold.ndim < 2:
        raise ValueError(f"bold must have shape (..., T, N), got {tuple(bold.shape)}")
    T = bold.shape[-2]
    if T < 2:
        raise ValueError(f"bold needs at least 2 time points along axis -2, got T={T}")
    x = bold.astype(_work_dtype(xp, bold), copy=False)
    scale = xp.max(xp.abs(x), axis=-2)  # (..., N)
    x = x - xp.mean(x, axis=-2, keepdims=True)
    cov = xp.matmul(xp.swapaxes(x, -1, -2), x)  # (..., N, N)
    ss = xp.sum(x * x, axis=-2)  # (..., N) sums of squares (more accurate than the diagonal)
    sd = xp.sqrt(ss)
    eps = xp.finfo(x.dtype).eps
    zero = sd <= (1e-12 if x.dtype == xp.float64 else 1e2 * eps) * np.sqrt(T) * scale
    sd = xp.where(zero, xp.nan, sd)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / (sd[..., :, None] * sd[..., None, :])
    return xp.clip(r, -1.0, 1.0)


def corr_upper(a, b, k: int = 1):
    """Pearson correlation between the upper triangles (k) of matrices ``a`` and ``b``.

    ``a`` (..., N, N) and ``b`` (..., N, N) broadcast against each other; result (...).
    This is the FC similarity r(FC_sim, FC_emp) of Kong et al. 2021 and Zhang et al. 2024.
    NaN entries propagate to NaN.
    """
    xp = array_module(a, b)
    u = upper(a, k)
    v = upper(b, k)
    dt = xp.result_type(_work_dtype(xp, u), _work_dtype(xp, v))
    u = u.astype(dt, copy=False)
    v = v.astype(dt, copy=False)
    u = u - xp.mean(u, axis=-1, keepdims=True)
    v = v - xp.mean(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = xp.sum(u * v, axis=-1) / xp.sqrt(xp.sum(u * u, axis=-1) * xp.sum(v * v, axis=-1))
    return xp.clip(r, -1.0, 1.0)


def mean_fc(fc_mat, k: int = 1):
    """Mean of the upper triangle (k) of FC matrices (..., N, N) -> (...)."""
    xp = array_module(fc_mat)
    u = upper(fc_mat, k)
    return xp.mean(u.astype(_work_dtype(xp, u), copy=False), axis=-1)


def _check_window(T: int, window, step) -> None:
    for name, val in (("window", window), ("step", step)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise ValueError(f"{name} must be an integer number of TRs, got {val!r}")
    if window < 2:
        raise ValueError(f"window must be >= 2 TRs (a correlation needs 2 points), got window={window}")
    if step < 1:
        raise ValueError(f"step must be >= 1 TR, got step={step}")
    if window > T:
        raise ValueError(f"window must be <= the number of time points T={T}, got window={window}")


def n_windows(T: int, window: int, step: int) -> int:
    """Number of sliding windows: floor((T - window) / step) + 1."""
    _check_window(T, window, step)
    return (T - window) // step + 1


def window_starts(T: int, window: int, step: int) -> np.ndarray:
    """First TR of each sliding window: 0, step, 2 step, ... while start + window <= T."""
    _check_window(T, window, step)
    return np.arange(0, T - window + 1, step)


def window_fc_upper(bold, window: int, step: int):
    """Upper triangles (k = 1) of the FC of each sliding window: (..., T, N) -> (..., W, N(N-1)/2)."""
    xp = array_module(bold)
    if bold.ndim < 2:
        raise ValueError(f"bold must have shape (..., T, N), got {tuple(bold.shape)}")
    starts = window_starts(bold.shape[-2], window, step)
    idx = starts[:, None] + np.arange(window)[None, :]  # (W, window)
    if xp is not np:
        idx = xp.asarray(idx)
    xw = bold[..., idx, :]  # (..., W, window, N)
    return upper(fc(xw))


def fcd(bold, window: int = 83, step: int = 1):
    """Functional connectivity dynamics matrix (Hansen et al. 2015; CBIG pMFM/pFIC settings).

    Sliding windows of ``window`` TRs, starting every ``step`` TRs (W = floor((T - window)/step) + 1
    windows); FC per window; then::

        FCD[a, b] = Pearson r(upper(FC_a), upper(FC_b))     (upper triangle, k = 1)

    computed for all pairs at once by standardising each window's FC vector and one batched
    matmul. ``bold`` (..., T, N) -> (..., W, W). A window in which a region is constant gives a
    NaN window FC and hence NaN FCD entries.

    Raises ValueError when ``window`` < 2, ``step`` < 1 or ``window`` > T.
    """
    xp = array_module(bold)
    v = window_fc_upper(bold, window, step)  # (..., W, M)
    v = v - xp.mean(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = v / xp.sqrt(xp.sum(v * v, axis=-1, keepdims=True))
    out = xp.matmul(v, xp.swapaxes(v, -1, -2))
    return xp.clip(out, -1.0, 1.0)


def fcd_distribution(bold, window: int = 83, step: int = 1):
    """Upper triangle (k = 1) of the FCD matrix, sorted ascending: (..., T, N) -> (..., W(W-1)/2).

    Sorting makes the KS distance cheap and is how the CBIG code stores the distribution
    (Kong et al. 2021). NaN entries, if any, sort to the end.
    """
    xp = array_module(bold)
    return xp.sort(upper(fcd(bold, window, step), 1), axis=-1)


def _ks_hist(a, b, bins: int, range_: tuple[float, float]):
    xp = array_module(a, b)
    lo, hi = range_
    edges = xp.linspace(lo, hi, bins + 1)

    def cdf(x):
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        # bin index in [0, bins - 1]; values outside the range are clipped into the end bins
        i = xp.clip(xp.searchsorted(edges, x2, side="right") - 1, 0, bins - 1)
        i = i + bins * xp.arange(x2.shape[0])[:, None]
        counts = xp.bincount(i.ravel(), minlength=bins * x2.shape[0]).reshape(x2.shape[0], bins)
        c = xp.cumsum(counts, axis=-1) / x.shape[-1]
        return c.reshape(lead + (bins,))

    return xp.max(xp.abs(cdf(a) - cdf(b)), axis=-1)


def ks_distance(a, b, bins: int | None = None, range: tuple[float, float] = (-1.0, 1.0)):
    """Two-sample Kolmogorov–Smirnov statistic D = max_x |F_a(x) - F_b(x)|.

    ``a`` (..., Ma) and ``b`` (Mb,) or (..., Mb) are sample sets along the last axis; leading axes
    broadcast. The result has the broadcast leading shape.

    Exact by default (``bins=None``): the pooled samples are sorted and the empirical CDFs are
    compared at every distinct pooled value (ties handled as in ``scipy.stats.ks_2samp``, which
    it equals). A sample set containing NaN gives NaN.

    ``bins=k`` gives the CBIG pMFM/pFIC variant instead (Kong et al. 2021; Zhang et al. 2024; the
    CBIG code uses 10 000 equal-width bins on [-1, 1]): both samples are histogrammed on ``range``
    (values outside are counted in the end bins) and D is the largest difference of the
    cumulative histograms. It differs from the exact value by at most the mass in one bin.
    """
    xp = array_module(a, b)
    if a.ndim < 1 or b.ndim < 1:
        raise ValueError("a and b must have at least one (sample) axis")
    Ma, Mb = a.shape[-1], b.shape[-1]
    if Ma == 0 or Mb == 0:
        raise ValueError(f"a and b must hold at least one sample each, got Ma={Ma}, Mb={Mb}")
    lead = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    a = xp.broadcast_to(a, lead + (Ma,))
    b = xp.broadcast_to(b, lead + (Mb,))
    bad = xp.any(xp.isnan(a), axis=-1) | xp.any(xp.isnan(b), axis=-1)
    if bins is not None:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be a positive integer or None, got {bins!r}")
        d = _ks_hist(a, b, int(bins), range)
        return xp.where(bad, xp.nan, d)
    dt = xp.result_type(a.dtype, b.dtype)
    pooled = xp.concatenate([a.astype(dt, copy=False), b.astype(dt, copy=False)], axis=-1)
    order = xp.argsort(pooled, axis=-1)  # tie order is irrelevant: only run ends are read
    vals = xp.take_along_axis(pooled, order, axis=-1)
    from_a = order < Ma
    ca = xp.cumsum(from_a, axis=-1)  # number of a-samples <= vals[k] (up to ties)
    cb = (xp.arange(1, Ma + Mb + 1) - ca)
    diff = xp.abs(ca / Ma - cb / Mb)
    # the CDFs are only defined after the last element of a run of ties
    last = xp.ones(vals.shape, dtype=bool)
    last[..., :-1] = vals[..., 1:] != vals[..., :-1]
    d = xp.max(xp.where(last, diff, 0.0), axis=-1)
    return xp.where(bad, xp.nan, d)


def plausible(mean_rate_E, low: float = PLAUSIBLE_RATE_HZ[0], high: float = PLAUSIBLE_RATE_HZ[1]):
    """Biological plausibility of a candidate (Zhang et al. 2024 pFIC).

    True iff every region's time-averaged excitatory rate r_E lies in [low, high] Hz
    (default [2.7, 3.3]; the relaxed variant of the same paper is [2.5, 3.5], see
    ``PLAUSIBLE_RATE_RELAXED_HZ``). ``mean_rate_E`` (..., N) -> bool (...). NaN is implausible.
    """
    xp = array_module(mean_rate_E)
    if not low <= high:
        raise ValueError(f"low must be <= high, got low={low}, high={high}")
    r = mean_rate_E
    return xp.all((r >= low) & (r <= high), axis=-1)


def ei_ratio(mean_S_E, mean_S_I):
    """E/I ratio per region (Zhang et al. 2024): mean_t(S_E) / mean_t(S_I).

    ``mean_S_E`` and ``mean_S_I`` are time-averaged synaptic gating variables (..., N); the
    result has their broadcast shape. A zero mean_S_I gives inf (or NaN for 0/0).
    """
    xp = array_module(mean_S_E, mean_S_I)
    with np.errstate(invalid="ignore", divide="ignore"):
        return xp.asarray(mean_S_E) / xp.asarray(mean_S_I)
