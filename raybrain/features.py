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
    "segment_starts",
    "segmented_fcd_distribution",
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


def _sliding_max(a, window: int):
    """max over t in [s, s + window) of ``a`` (..., T) for every s: (..., T - window + 1).

    Sparse-table doubling: after j passes m[t] = max(a[t : t + 2^j]); a window is then covered by
    two overlapping power-of-two spans. O(T log window) per series, plain slicing (NumPy and CuPy).
    """
    xp = array_module(a)
    m, p = a, 1
    while 2 * p <= window:
        m = xp.maximum(m[..., :-p], m[..., p:])
        p *= 2
    n = a.shape[-1] - window + 1
    return xp.maximum(m[..., :n], m[..., window - p:window - p + n])


#: bytes of working memory per chunk of candidates in the window-FC computation
_WFC_CHUNK_BYTES = 256 * 2**20
#: a window's one-pass moments are trusted while sum (x - shift)^2 <= _WFC_KAPPA * sum (x - mean)^2
#: for every region (relative rounding error below about window * eps * _WFC_KAPPA); other
#: windows are recomputed directly
_WFC_KAPPA = 1e3


def _window_fc_chunk(x, window: int, step: int, out_dtype):
    """Window FCs of one chunk ``x`` (b, T, N) float64 -> (b, M, W) in ``out_dtype``, pairs first.

    See :func:`window_fc_upper` for the method. Time is the last (contiguous) axis throughout,
    so the windows are strided slices and the pair rows are contiguous.
    """
    xp = array_module(x)
    b, T, N = x.shape
    dt = x.dtype
    L = window
    nb = -(-T // L)  # blocks of L TRs; the last one may be partial (zero-padded)
    W = (T - window) // step + 1
    M = N * (N - 1) // 2
    C = 2 * N + M
    starts = np.arange(W) * step
    first = np.concatenate([[0], np.cumsum(np.arange(N - 1, 0, -1))]).astype(int)  # row of (i, i+1)

    xt = xp.zeros((b, N, nb * L), dtype=dt)
    xt[:, :, :T] = xp.swapaxes(x, -1, -2)
    xb = xt.reshape(b, N, nb, L)
    count = xp.asarray(np.minimum(L, T - L * np.arange(nb)).astype(np.float64), dtype=dt)
    a = xp.sum(xb, axis=-1) / count  # (b, N, nb): block means, the shifts a_k
    pad = T - (nb - 1) * L  # real TRs in the last block

    def moments(v):
        """Per-TR moments of v (b, N, ...): v_i, v_i^2, v_i v_j (i < j, triu order): (b, C, ...)."""
        z = xp.empty((b, C) + v.shape[2:], dtype=dt)
        z[:, :N] = v
        xp.multiply(v, v, out=z[:, N:2 * N])
        for i in range(N - 1):
            r0 = 2 * N + first[i]
            xp.multiply(v[:, i:i + 1], v[:, i + 1:], out=z[:, r0:r0 + N - 1 - i])
        return z

    # part A of a window: running sums to the end of block k of y = x - a_k, taken on the
    # time-reversed series (whose blocks are the same blocks, reversed):
    # suf[nb L - 1 - t] = sum over [t, end of t's block]
    y = xb - a[..., None]
    y[:, :, -1, pad:] = 0  # the padding stays exactly zero
    z = moments(xp.ascontiguousarray(xp.flip(y.reshape(b, N, nb * L), axis=-1)))
    suf = xp.cumsum(z.reshape(b, C, nb, L), axis=-1).reshape(b, C, nb * L)
    del z
    # part B: running sums from the start of block k+1 of y = x - a_k (the previous block's shift,
    # so that both parts of a window share one shift): pre[t] = sum over [start of t's block, t),
    # exclusive (0 at a block start), via moments of y delayed by one TR within each block; one
    # extra all-zero block at the end
    y = xb - xp.concatenate([a[..., :1], a[..., :-1]], axis=-1)[..., None]
    y[:, :, -1, pad:] = 0
    yd = xp.zeros((b, N, nb + 1, L), dtype=dt)
    yd[:, :, :nb, 1:] = y[..., :-1]
    del y, xt, xb
    z = moments(yd)  # (b, C, nb + 1, L)
    del yd
    pre = xp.cumsum(z, axis=-1).reshape(b, C, (nb + 1) * L)
    del z
    # window [s, s + window) = [s, end of block k] + [start of block k+1, s + window) (may be empty)
    stop = nb * L - 2 - starts[-1]
    A = suf[..., nb * L - 1:(stop if stop >= 0 else None):-step]  # (b, C, W)
    Bm = pre[..., window:starts[-1] + window + 1:step]  # exactly 0 for a window = one block
    S = A[:, :N] + Bm[:, :N]  # sums of x - a_k over the window
    m = S / window
    q = A[:, N:2 * N] + Bm[:, N:2 * N]  # sums of squares about a_k
    ss = q - S * m  # centred sums of squares
    sd = xp.sqrt(xp.maximum(ss, 0))
    # zero variance as in fc(): sd <= tol sqrt(window) max_t |x| over the window; exactly
    # constant windows are caught by their range (their one-pass variance is round-off)
    xs = xp.swapaxes(x, -1, -2)
    hi = _sliding_max(xs, window)[..., ::step]  # (b, N, W)
    lo = -_sliding_max(-xs, window)[..., ::step]
    const = hi == lo
    scale = xp.maximum(xp.abs(hi), xp.abs(lo))
    tol = 1e-12 if out_dtype == xp.float64 else 1e2 * float(xp.finfo(out_dtype).eps)
    sd = xp.where(const | (sd <= tol * np.sqrt(window) * scale), xp.nan, sd)
    redo = xp.any((ss * _WFC_KAPPA <= q) & ~const, axis=1)  # (b, W): ill-conditioned windows
    c = xp.empty((b, M, W), dtype=dt)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(N - 1):
            p = slice(first[i], first[i] + N - 1 - i)  # pairs (i, j > i)
            r = slice(2 * N + p.start, 2 * N + p.stop)
            rows = c[:, p]
            xp.add(A[:, r], Bm[:, r], out=rows)
            rows -= S[:, i:i + 1] * m[:, i + 1:]  # centred cross-products
            rows /= sd[:, i:i + 1] * sd[:, i + 1:]
    del pre, suf, A, Bm
    c = xp.clip(c, -1.0, 1.0, out=c).astype(out_dtype, copy=False)
    if bool(xp.any(redo)):
        # windows where a region's mean is far from its block mean relative to its spread
        # (near-constant or steeply drifting): the direct per-window correlation instead
        bi, wi = xp.nonzero(redo)
        t = xp.asarray(starts)[wi][:, None] + xp.arange(window)[None, :]
        c[bi, :, wi] = upper(fc(x[bi[:, None], t].astype(out_dtype, copy=False)))
    return c


def _window_fc_t(bold, window: int, step: int):
    """Window FC upper triangles with windows last: (..., T, N) -> (..., M, W), work dtype."""
    xp = array_module(bold)
    if bold.ndim < 2:
        raise ValueError(f"bold must have shape (..., T, N), got {tuple(bold.shape)}")
    T, N = bold.shape[-2], bold.shape[-1]
    W = n_windows(T, window, step)
    M = N * (N - 1) // 2
    lead = bold.shape[:-2]
    wdt = _work_dtype(xp, bold)
    x = bold.reshape((-1, T, N))
    out = xp.empty((x.shape[0], M, W), dtype=wdt)
    per = 8 * (3 * (T + window) * (2 * N + M) + 3 * W * M)
    chunk = max(1, _WFC_CHUNK_BYTES // per)
    for c in range(0, x.shape[0], chunk):
        xc = x[c:c + chunk].astype(xp.float64, copy=False)
        out[c:c + chunk] = _window_fc_chunk(xc, window, step, wdt)
    return out.reshape(lead + (M, W))


def window_fc_upper(bold, window: int, step: int):
    """Upper triangles (k = 1) of the FC of each sliding window: (..., T, N) -> (..., W, N(N-1)/2).

    Window w covers TRs [s_w, s_w + window), s_w = w * step; its FC is the Pearson correlation
    matrix of the window, as :func:`fc` gives it (clipped to [-1, 1]; NaN for the pairs of a
    region that is constant in the window).

    Computed without revisiting each window's samples, in O(T N^2 + W N^2) rather than
    O(W window N^2): time is cut into blocks of ``window`` TRs, so a window is the suffix of one
    block plus a prefix of the next (the van Herk 1992 / Gil & Werman 1993 sliding-window trick).
    With a_k the mean of block k, running sums of y = x - a_k, y_i^2 and y_i y_j (i < j) are
    taken along time in float64: backwards to the end of each block, and forwards from the start
    of block k+1 (still about a_k). For a window starting in block k, these give the sums over the
    window of y = x - a_k, S_i = sum_t y_ti and Q_ij = sum_t y_ti y_tj, and::

        C_ij = Q_ij - S_i S_j / window              (centred cross-products)
        FC_ij = C_ij / sqrt(C_ii C_jj)

    Every sum runs over at most ``window`` TRs of data centred on a nearby block mean, so there is
    none of the cancellation that cumulative sums over the whole series (or a large offset) would
    cause. The one-pass step C = Q - S S / n is still ill-conditioned when a window's mean is far
    from a_k relative to its spread; a window where Q_ii > 1e3 C_ii for some region (a nearly
    constant region, a steep drift) is recomputed directly, so the result equals the direct
    per-window correlation to float rounding everywhere (about 1e-14 for float64 BOLD).
    Candidates are processed in chunks so that the working memory (about
    3 (T + window)(2N + N(N-1)/2) + W N(N-1)/2 floats per candidate) stays bounded.
    """
    xp = array_module(bold)
    v = _window_fc_t(bold, window, step)
    return xp.ascontiguousarray(xp.swapaxes(v, -1, -2))


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
    v = _window_fc_t(bold, window, step)  # (..., M, W): window FC vectors as columns
    v -= xp.mean(v, axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        v /= xp.sqrt(xp.sum(v * v, axis=-2, keepdims=True))
    out = xp.matmul(xp.swapaxes(v, -1, -2), v)
    return xp.clip(out, -1.0, 1.0, out=out)


def fcd_distribution(bold, window: int = 83, step: int = 1):
    """Upper triangle (k = 1) of the FCD matrix, sorted ascending: (..., T, N) -> (..., W(W-1)/2).

    Sorting makes the KS distance cheap and is how the CBIG code stores the distribution
    (Kong et al. 2021). NaN entries, if any, sort to the end.
    """
    xp = array_module(bold)
    return xp.sort(upper(fcd(bold, window, step), 1), axis=-1)


def segment_starts(T: int, segment: int) -> np.ndarray:
    """First frames of the k = floor(T / segment) non-overlapping segments of ``segment`` frames
    spread evenly over a recording of T frames (the first starts at 0, the last ends at T when
    k > 1): ``round(i (T - segment) / (k - 1))``, i = 0 … k-1; a single segment starts at 0."""
    T, segment = int(T), int(segment)
    if segment < 1 or segment > T:
        raise ValueError(f"segment must be between 1 and T={T} frames, got {segment}")
    k = T // segment
    if k == 1:
        return np.zeros(1, dtype=np.int64)
    return np.rint(np.arange(k) * ((T - segment) / (k - 1))).astype(np.int64)


def segmented_fcd_distribution(bold, window: int = 83, step: int = 1, segment: int | None = None):
    """FCD distribution of a recording cut into segments of ``segment`` frames, pooled and sorted:
    (..., T, N) -> (..., k M_s), with k = floor(T / segment) segments (:func:`segment_starts`) and
    M_s = W_s (W_s - 1) / 2 window pairs per segment, W_s = floor((segment - window) / step) + 1.

    The FCD distribution depends on the length of the recording it comes from: of the window
    pairs of a short recording, a larger share overlap in time, and overlapping windows have
    similar FCs (FCD values near 1). Comparing the FCD of a simulation of L frames with that of a
    recording of T > L frames is therefore biased; computing both on segments of the same
    length, and pooling a long recording's segments, compares like with like. ``segment=None``,
    or a segment not shorter than T, is the whole recording (:func:`fcd_distribution`).
    """
    xp = array_module(bold)
    T = bold.shape[-2]
    if segment is None or int(segment) >= T:
        return fcd_distribution(bold, window, step)
    _check_window(int(segment), window, step)
    starts = segment_starts(T, int(segment))
    idx = starts[:, None] + np.arange(int(segment))[None, :]  # (k, segment)
    parts = bold[..., idx if xp is np else xp.asarray(idx), :]  # (..., k, segment, N)
    d = upper(fcd(parts, window, step), 1)  # (..., k, M_s)
    return xp.sort(d.reshape(d.shape[:-2] + (-1,)), axis=-1)


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
    # tie order is irrelevant: only run ends are read. Sorted inputs (as fcd_distribution gives)
    # make the pooled array two sorted runs, which NumPy's stable sort merges in O(Ma + Mb).
    kw = {}
    if xp is np and bool(np.all(a[..., 1:] >= a[..., :-1])) and bool(np.all(b[..., 1:] >= b[..., :-1])):
        kw = {"kind": "stable"}
    order = xp.argsort(pooled, axis=-1, **kw)
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
