"""The loss protocol: :class:`Loss`, its :class:`LossResult`, the FC/FCD :class:`Target`, :func:`valid_rows`.

A loss is called on a batch of simulated signals (B, T, N) (BOLD for the FC losses of
:mod:`raybrain.losses.fc`, an M/EEG-like signal for :mod:`raybrain.losses.spectral`) and a target and
returns a :class:`LossResult` whose arrays are all finite: an invalid candidate (flagged invalid by the
caller, non-finite signal, a constant region giving a NaN FC, or any NaN in the features) gets the
loss's ``worst`` total and the worst value of every component, and ``valid=False``. A failed
simulation is thus a bad but finite cost, never a crash (as in the CBIG code, which uses 10 or 5).

Declared by every loss: ``name``, ``components`` (the names of its parts), ``component_worst``
(the worst value of each), ``worst`` (the total of an invalid candidate, at least
:meth:`Loss.max_valid_total`) and ``needs_fcd``; hooks ``_components`` and ``_total``.
:class:`raybrain.losses.composite.CompositeLoss` follows the same call convention
(``loss(signals, targets, valid=None) -> LossResult``) with ``name``, ``worst`` and ``needs_fcd``.

The FCD of each candidate is the dominant cost (T = 1200 TRs, W ≈ 1118 windows, N = 80 regions:
O((T + W) N^2 + W^2 N^2) flops and O(T N^2 + W N^2 + W^2) memory, about 130 MB in float64, plus
the KS statistic's sort over the W(W-1)/2 FCD values). Candidates are therefore processed in slices
of ``slice_size`` so that peak memory stays bounded by a few slices, never O(B W^2).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raybrain._backend import array_module, asnumpy
from raybrain import features as F

__all__ = ["Target", "LossResult", "Loss", "valid_rows"]


# --------------------------------------------------------------------------------------------
# target
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Target:
    """Empirical features a simulation is fitted to.

    fc:        (N, N) empirical FC (Pearson), e.g. one subject's or a group average.
    fcd_dist:  (M,) the empirical FCD distribution (upper triangle of the FCD matrix), stored
               sorted ascending; None when only FC is fitted.
    window, step: the FCD sliding-window settings (TRs) the simulated FCD must use too
               (CBIG: 83 and 1 at TR 0.72 s). Required when ``fcd_dist`` is given.
    segment:   the length (TRs) of the segments ``fcd_dist`` was computed on, pooled
               (:func:`raybrain.features.segmented_fcd_distribution`); a longer simulation is cut
               into segments of this length too, so both FCDs come from recordings of one length.
               None: each FCD from its whole recording.

    Arrays are stored as float64 NumPy arrays (copied to the GPU when a loss runs on CuPy).
    """

    fc: np.ndarray
    fcd_dist: np.ndarray | None = None
    window: int | None = None
    step: int | None = None
    segment: int | None = None

    def __post_init__(self):
        fc_ = np.asarray(asnumpy(self.fc), dtype=np.float64)
        if fc_.ndim != 2 or fc_.shape[0] != fc_.shape[1] or fc_.shape[0] < 3:
            raise ValueError(f"Target.fc must be a square (N, N) matrix with N >= 3, got shape {fc_.shape}")
        if not np.all(np.isfinite(F.upper(fc_))):
            raise ValueError("Target.fc has non-finite off-diagonal entries (a constant region in the empirical BOLD?)")
        object.__setattr__(self, "fc", fc_)
        if self.fcd_dist is None:
            return
        d = np.asarray(asnumpy(self.fcd_dist), dtype=np.float64)
        if d.ndim != 1 or d.size < 1:
            raise ValueError(f"Target.fcd_dist must be a non-empty 1-D array, got shape {d.shape}")
        if not np.all(np.isfinite(d)):
            raise ValueError("Target.fcd_dist has non-finite entries")
        object.__setattr__(self, "fcd_dist", np.sort(d))
        for name in ("window", "step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"Target.{name} must be an integer number of TRs when fcd_dist is given, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.window < 2:
            raise ValueError(f"Target.window must be >= 2, got {self.window}")
        if self.step < 1:
            raise ValueError(f"Target.step must be >= 1, got {self.step}")
        if self.segment is not None:
            if isinstance(self.segment, bool) or not isinstance(self.segment, (int, np.integer)):
                raise ValueError(f"Target.segment must be None or an integer number of TRs, got {self.segment!r}")
            object.__setattr__(self, "segment", int(self.segment))
            if self.segment < self.window + self.step:
                raise ValueError(f"Target.segment={self.segment} TRs holds fewer than two FCD windows "
                                 f"(window={self.window}, step={self.step})")

    @property
    def n_regions(self) -> int:
        return self.fc.shape[0]

    @property
    def has_fcd(self) -> bool:
        return self.fcd_dist is not None

    @classmethod
    def from_bold(cls, bold, window: int | None = 83, step: int = 1, segment: int | None = None) -> "Target":
        """Target from one empirical BOLD recording ``bold`` (T, N); ``window=None`` skips the FCD.
        ``segment``: the simulated length in TRs, when shorter than the recording (the FCD is then
        pooled over segments of that length; see :class:`Target`)."""
        b = np.asarray(asnumpy(bold), dtype=np.float64)
        if b.ndim != 2:
            raise ValueError(f"bold must have shape (T, N), got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ValueError("bold has non-finite values")
        fc_ = F.fc(b)
        if not np.all(np.isfinite(fc_)):
            const = np.flatnonzero(np.isnan(np.diagonal(fc_)))
            raise ValueError(f"bold has constant (zero-variance) regions {const.tolist()}: FC undefined")
        if window is None:
            return cls(fc=fc_)
        from raybrain.data.validate import check_fcd_window

        check_fcd_window(b.shape[0], window, step, source="bold")
        seg = None if segment is None or int(segment) >= b.shape[0] else int(segment)
        return cls(fc=fc_, fcd_dist=F.segmented_fcd_distribution(b, window, step, seg), window=window, step=step,
                   segment=seg)

    @classmethod
    def from_features(cls, fc, fcd_dist=None, window: int | None = 83, step: int | None = 1,
                      segment: int | None = None) -> "Target":
        """Target from precomputed features (e.g. a group FC averaged over subjects, pooled FCDs),
        ``fcd_dist`` computed on segments of ``segment`` TRs (None: whole recordings)."""
        if fcd_dist is None:
            return cls(fc=fc)
        return cls(fc=fc, fcd_dist=fcd_dist, window=window, step=step, segment=segment)


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


def valid_rows(x, valid=None):
    """``(B,)`` bool: the batch rows of ``x`` (B, T, N) that are ``valid`` (default all) and finite;
    a ``valid`` of the wrong shape is a ValueError."""
    xp = array_module(x)
    B = x.shape[0]
    ok = xp.ones(B, dtype=bool) if valid is None else xp.asarray(valid).astype(bool)
    if ok.shape != (B,):
        raise ValueError(f"valid must have shape (B,)=({B},), got {tuple(ok.shape)}")
    with np.errstate(all="ignore"):
        return ok & xp.all(xp.isfinite(x), axis=(1, 2))


@dataclass
class LossResult:
    """Per-candidate losses of a batch; every array has shape (B,) and is finite.

    total:      the cost (lower is better); ``worst`` for invalid candidates.
    components: named parts of the cost (see the loss's ``components``).
    valid:      False where the candidate was invalid (its values are the worst values).
    """

    total: object
    components: dict = field(default_factory=dict)
    valid: object = None
    name: str = ""

    def __len__(self) -> int:
        return int(self.total.shape[0])

    def as_records(self) -> list[dict]:
        """One dict per candidate: ``{"loss": float, <component>: float, ..., "valid": bool}``."""
        tot = asnumpy(self.total)
        comps = {k: asnumpy(v) for k, v in self.components.items()}
        val = asnumpy(self.valid)
        out = []
        for i in range(tot.shape[0]):
            rec = {"loss": float(tot[i])}
            for k, v in comps.items():
                rec[k] = float(v[i])
            rec["valid"] = bool(val[i])
            out.append(rec)
        return out


# --------------------------------------------------------------------------------------------
# protocol
# --------------------------------------------------------------------------------------------


class Loss:
    """Base class: batch handling, invalid candidates, slicing. Subclasses implement ``_components``.

    Parameters
    ----------
    worst: total assigned to invalid candidates (default: the class's ``worst``).
    slice_size: candidates evaluated at once; None picks the largest slice whose estimated
        working memory fits in ``memory_budget`` bytes (at least 1).
    memory_budget: bytes, used when ``slice_size`` is None (default 512 MiB).
    """

    name: str = "loss"
    components: tuple[str, ...] = ()
    #: worst value of each component (given to invalid candidates)
    component_worst: dict = {}
    worst: float = 10.0
    needs_fcd: bool = True

    def __init__(self, worst: float | None = None, slice_size: int | None = None,
                 memory_budget: int = 512 * 2**20):
        if worst is not None:
            if not np.isfinite(worst):
                raise ValueError(f"worst must be finite, got {worst}")
            top = self.max_valid_total()
            if worst < top:
                raise ValueError(f"worst must be >= {top:g}, the largest cost a valid candidate of loss "
                                 f"{self.name!r} can get (else failed simulations would rank above valid "
                                 f"ones), got {worst}")
            self.worst = float(worst)
        if slice_size is not None and (isinstance(slice_size, bool) or not isinstance(slice_size, (int, np.integer))
                                       or slice_size < 1):
            raise ValueError(f"slice_size must be a positive integer or None, got {slice_size!r}")
        self.slice_size = slice_size
        self.memory_budget = int(memory_budget)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(worst={self.worst}, slice_size={self.slice_size})"

    @classmethod
    def max_valid_total(cls) -> float:
        """The largest total a valid candidate can get: the total of the worst components."""
        if not cls.components:
            return -np.inf
        return float(np.asarray(cls._total(cls, {c: np.float64(cls.component_worst[c]) for c in cls.components})))

    # -- memory ------------------------------------------------------------------------------
    def _per_candidate_bytes(self, T: int, N: int, target: Target, itemsize: int) -> int:
        b = 4 * T * N * itemsize + 4 * N * N * itemsize
        if self.needs_fcd:
            W = F.n_windows(T, target.window, target.step)
            M = N * (N - 1) // 2
            Mf = W * (W - 1) // 2
            C = 2 * N + M  # block moments per TR (features.window_fc_upper)
            b += itemsize * (3 * (T + target.window) * C + 3 * W * M + 3 * W * W)
            b += 8 * 8 * (Mf + target.fcd_dist.size)  # KS: pooled values, order, counts, differences
        return b

    def _slice(self, T: int, N: int, target: Target, itemsize: int) -> int:
        if self.slice_size is not None:
            return int(self.slice_size)
        return max(1, self.memory_budget // max(1, self._per_candidate_bytes(T, N, target, itemsize)))

    # -- evaluation --------------------------------------------------------------------------
    def _components(self, sim_fc, sim_fcd, emp_fc, emp_fcd) -> dict:
        """Components for a slice of valid candidates: sim_fc (b, N, N), sim_fcd (b, M) or None."""
        raise NotImplementedError

    def _total(self, comps: dict):
        raise NotImplementedError

    def __call__(self, bold, target: Target, valid=None) -> LossResult:
        """Loss of each candidate of ``bold`` (B, T, N) against ``target``."""
        xp = array_module(bold)
        if not isinstance(target, Target):
            raise ValueError(f"target must be a raybrain.losses.Target, got {type(target).__name__}")
        if bold.ndim != 3:
            raise ValueError(f"bold must have shape (B, T, N), got {tuple(bold.shape)}")
        B, T, N = bold.shape
        if N != target.n_regions:
            raise ValueError(f"bold has N={N} regions but target.fc has {target.n_regions}")
        if self.needs_fcd:
            if not target.has_fcd:
                raise ValueError(f"loss {self.name!r} needs an FCD: target.fcd_dist is None "
                                 "(build the target with Target.from_bold(..., window=83, step=1))")
            if T < target.window + target.step:
                raise ValueError(f"bold has T={T} time points, too few for an FCD (target.window={target.window}, "
                                 f"step={target.step}: needs at least {target.window + target.step} for two windows)")
        ok = valid_rows(bold, valid)

        comps = {c: xp.full(B, float(self.component_worst[c])) for c in self.components}
        total = xp.full(B, float(self.worst))
        idx = np.flatnonzero(asnumpy(ok))
        if idx.size:
            emp_fc = xp.asarray(target.fc)
            emp_fcd = xp.asarray(target.fcd_dist) if (self.needs_fcd and target.has_fcd) else None
            itemsize = 8 if xp is np else max(4, bold.dtype.itemsize)
            step = self._slice(T, N, target, itemsize)
            for s in range(0, idx.size, step):
                sel = idx[s:s + step]
                sel_x = sel if xp is np else xp.asarray(sel)
                b = bold[sel_x]
                sim_fc = F.fc(b)
                sim_fcd = (F.segmented_fcd_distribution(b, target.window, target.step, target.segment)
                           if self.needs_fcd else None)
                part = self._components(sim_fc, sim_fcd, emp_fc, emp_fcd)
                for c in self.components:
                    comps[c][sel_x] = part[c].astype(xp.float64)
        tot = self._total(comps)
        good = ok & xp.isfinite(tot)
        for c in self.components:
            good &= xp.isfinite(comps[c])
        total = xp.where(good, tot, float(self.worst))
        comps = {c: xp.where(good, v, float(self.component_worst[c])) for c, v in comps.items()}
        return LossResult(total=total, components=comps, valid=good, name=self.name)
