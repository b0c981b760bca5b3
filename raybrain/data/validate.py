"""Validation of subject data: structural connectivity, fibre lengths, BOLD, TR, FCD windows.

Every check raises ``ValueError`` with a message that starts with the *source* (a file path or
an argument name) and says what is wrong, e.g.::

    sc.csv: SC must be square, got shape (80, 79)

The ``check_*`` functions return a float64 NumPy copy of valid input so callers can store it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "check_sc",
    "check_lengths",
    "check_bold",
    "check_tr",
    "check_fcd_window",
    "check_labels",
    "check_centres",
    "check_fc_target",
    "check_fcd_target",
]


def _as_float_array(a, what: str, source: str) -> np.ndarray:
    if a is None:
        raise ValueError(f"{source}: {what} is missing (got None)")
    try:
        arr = np.array(a, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {what} must be a numeric array ({exc})") from None
    return arr


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_sc(sc, source: str = "sc") -> np.ndarray:
    """Structural connectivity: 2-D, square, finite, non-negative, not all zero.

    Directed (asymmetric) SC is accepted; the diagonal is kept as given.
    """
    a = _as_float_array(sc, "SC", source)
    if a.ndim != 2:
        raise ValueError(f"{source}: SC must be a 2-D (N, N) matrix, got {a.ndim}-D shape {a.shape}")
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"{source}: SC must be square, got shape {a.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"{source}: SC must have at least 2 regions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(
            f"{source}: SC must be finite, found {int(np.sum(~np.isfinite(a)))} NaN/inf entries "
            f"(first at {_first_bad(~np.isfinite(a))})"
        )
    if np.any(a < 0):
        raise ValueError(
            f"{source}: SC must be non-negative, found {int(np.sum(a < 0))} negative entries "
            f"(min {a.min():.6g} at {_first_bad(a == a.min())})"
        )
    off = a.copy()
    np.fill_diagonal(off, 0.0)
    if not np.any(off > 0):
        raise ValueError(f"{source}: SC is all zero off the diagonal (no connections)")
    return a


def check_lengths(lengths, n_regions: int, source: str = "lengths") -> np.ndarray:
    """Fibre lengths: shape (N, N) matching SC, finite, non-negative."""
    a = _as_float_array(lengths, "lengths", source)
    if a.shape != (n_regions, n_regions):
        raise ValueError(
            f"{source}: lengths must have the same shape as SC ({n_regions}, {n_regions}), got shape {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(
            f"{source}: lengths must be finite, found {int(np.sum(~np.isfinite(a)))} NaN/inf entries "
            f"(first at {_first_bad(~np.isfinite(a))})"
        )
    if np.any(a < 0):
        raise ValueError(
            f"{source}: lengths must be non-negative, found {int(np.sum(a < 0))} negative entries "
            f"(first at {_first_bad(a < 0)})"
        )
    return a


def check_bold(bold, n_regions: int, source: str = "bold") -> np.ndarray:
    """BOLD: 2-D (T, N) with N = the number of SC regions, T >= 2, finite, no constant region.

    A (N, T) array is rejected with a hint to transpose it.
    """
    a = _as_float_array(bold, "BOLD", source)
    if a.ndim != 2:
        raise ValueError(f"{source}: BOLD must be a 2-D (T, N) array (time, regions), got shape {a.shape}")
    T, N = a.shape
    if N != n_regions:
        if T == n_regions:
            raise ValueError(
                f"{source}: BOLD must be (T, N) = (time, regions); got shape {a.shape}, which looks like "
                f"(regions, time) for N={n_regions} regions: transpose it (bold.T)"
            )
        raise ValueError(
            f"{source}: BOLD has {N} regions (columns) but SC has {n_regions}; expected shape (T, {n_regions}), "
            f"got {a.shape}"
        )
    if T < 2:
        raise ValueError(f"{source}: BOLD needs at least 2 time frames, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = ~np.isfinite(a)
        raise ValueError(
            f"{source}: BOLD must be finite, found {int(bad.sum())} NaN/inf values "
            f"(first at frame {_first_bad(bad)[0]}, region {_first_bad(bad)[1]})"
        )
    sd = a.std(axis=0)
    scale = np.max(np.abs(a), axis=0)
    const = sd <= 1e-12 * np.maximum(scale, np.finfo(np.float64).tiny)
    if np.any(const):
        idx = [int(i) for i in np.flatnonzero(const)]
        shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
        raise ValueError(
            f"{source}: BOLD is constant (zero variance) in {len(idx)} region(s) [{shown}]; "
            f"their correlations (FC) are undefined"
        )
    return a


def check_tr(tr, source: str = "tr") -> float:
    """Repetition time in seconds: a finite number > 0."""
    if tr is None:
        raise ValueError(f"{source}: TR (repetition time, seconds) is required")
    if isinstance(tr, bool):
        raise ValueError(f"{source}: TR must be a number of seconds, got {tr!r}")
    try:
        value = float(tr)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: TR must be a number of seconds, got {tr!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{source}: TR must be finite and > 0 seconds, got {tr!r}")
    return value


def check_fcd_window(n_frames: int, window: int, step: int, source: str = "bold") -> int:
    """Check that ``n_frames`` holds at least two FCD windows; return the number of windows.

    Windows of ``window`` frames start every ``step`` frames:
    W = floor((n_frames - window) / step) + 1, and an FCD distribution needs W >= 2.
    """
    for name, val in (("window", window), ("step", step)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise ValueError(f"{source}: FCD {name} must be an integer number of frames, got {val!r}")
    if window < 2:
        raise ValueError(f"{source}: FCD window must be >= 2 frames, got {window}")
    if step < 1:
        raise ValueError(f"{source}: FCD step must be >= 1 frame, got {step}")
    need = window + step
    if n_frames < need:
        raise ValueError(
            f"{source}: BOLD has {n_frames} frames, too few for FCD with window {window} and step {step} "
            f"(needs at least {need} frames for two windows)"
        )
    return (int(n_frames) - int(window)) // int(step) + 1


def check_labels(labels: Sequence[str] | None, n_regions: int, source: str = "labels") -> tuple[str, ...] | None:
    """Region labels: None or one string per region."""
    if labels is None:
        return None
    out = tuple(str(x) for x in labels)
    if len(out) != n_regions:
        raise ValueError(f"{source}: expected {n_regions} region labels (one per SC region), got {len(out)}")
    return out


def check_centres(centres, n_regions: int, source: str = "centres") -> np.ndarray:
    """Region centres: (N, 3) coordinates (mm), finite."""
    a = _as_float_array(centres, "centres", source)
    if a.shape != (n_regions, 3):
        raise ValueError(f"{source}: centres must be ({n_regions}, 3), one x, y, z per SC region, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{source}: centres must be finite, found {int(np.sum(~np.isfinite(a)))} NaN/inf entries "
                         f"(first at region {_first_bad(~np.isfinite(a))[0]})")
    return a


def check_fc_target(fc, n_regions: int, source: str = "fc") -> np.ndarray:
    """A precomputed empirical FC: (N, N), symmetric, Pearson r in [-1, 1] off the diagonal.

    The diagonal is ignored (files hold 1, 0 or NaN there) and set to 1, as the FC of a BOLD
    recording has it. Fisher z values (|z| > 1) are refused with a hint to give r = tanh(z).
    """
    a = _as_float_array(fc, "FC", source)
    if a.shape != (n_regions, n_regions):
        raise ValueError(f"{source}: FC must be ({n_regions}, {n_regions}) like the SC, got shape {a.shape}")
    off = ~np.eye(n_regions, dtype=bool)
    bad = off & ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{source}: FC must be finite off the diagonal, found {int(bad.sum())} NaN/inf "
                         f"entries (first at {_first_bad(bad)})")
    if np.any(np.abs(a[off]) > 1 + 1e-9):
        raise ValueError(f"{source}: FC values must be Pearson correlations in [-1, 1], found max |FC| = "
                         f"{np.abs(a[off]).max():.4g} (Fisher z? give r = tanh(z))")
    asym = np.abs(a - a.T)[off]
    if asym.size and asym.max() > 1e-6:
        raise ValueError(f"{source}: FC must be symmetric, max |FC - FC^T| = {asym.max():.3g}")
    a = np.clip((a + a.T) / 2, -1.0, 1.0)
    np.fill_diagonal(a, 1.0)
    return a


def check_fcd_target(fcd, source: str = "fcd") -> np.ndarray:
    """A precomputed FCD sample: 1-D, non-empty, finite, values in [-1, 1]; returned sorted."""
    a = _as_float_array(fcd, "FCD", source)
    if a.ndim != 1 or a.size < 1:
        raise ValueError(f"{source}: an FCD target must be a non-empty 1-D sample of FCD values, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{source}: FCD values must be finite, found {int(np.sum(~np.isfinite(a)))} NaN/inf")
    if np.any(np.abs(a) > 1 + 1e-9):
        raise ValueError(f"{source}: FCD values are correlations in [-1, 1], found min {a.min():.4g}, max {a.max():.4g}")
    return np.sort(np.clip(a, -1.0, 1.0))
