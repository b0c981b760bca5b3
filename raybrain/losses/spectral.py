"""The spectral loss: an M/EEG-like signal's power spectrum against an empirical spectrum.

:class:`SpectralLoss` (``"spectral"``) — cost ``d / (1 + d)`` with ``d`` the log-PSD distance
(:func:`raybrain.spectral.log_psd_distance`: mean over frequencies in ``fit_band`` and regions of
``(log10 P_sim - log10 P_emp)²``, Welch spectra, :func:`raybrain.spectral.welch`) of the simulated
signal (not BOLD) to a :class:`raybrain.spectral.SpectralTarget`: 0 for identical spectra, < 1 for
every valid candidate, ``worst = 1`` for invalid / non-finite ones.

The PSD features it uses live in :mod:`raybrain.spectral`, whose import pulls in nothing from
:mod:`raybrain.losses`.
"""
from __future__ import annotations

import numpy as np

from raybrain._backend import array_module
from raybrain.spectral import ALPHA, FIT_BAND, GAMMA, SpectralTarget, log_psd_distance, peak_frequency, welch

from .base import Loss, LossResult, valid_rows

__all__ = ["SpectralLoss"]


class SpectralLoss(Loss):
    """``d / (1 + d)`` with ``d`` = mean squared log10-PSD difference in ``band`` (default 2–100 Hz).

    Components: ``psd_log_mse`` (d), ``alpha_peak_diff`` and ``gamma_peak_diff`` (|Δ peak
    frequency| in Hz, averaged over regions; diagnostics, not in the total). Worst = 1, the bound
    of the total; invalid or non-finite candidates get it (and ``1e6``, 100 Hz, 100 Hz).
    """

    name = "spectral"
    components = ("psd_log_mse", "alpha_peak_diff", "gamma_peak_diff")
    component_worst = {"psd_log_mse": 1e6, "alpha_peak_diff": 100.0, "gamma_peak_diff": 100.0}
    worst = 1.0
    needs_fcd = False

    def __init__(self, band=FIT_BAND, worst: float | None = None):
        super().__init__(worst=worst)
        self.band = tuple(band)

    @classmethod
    def max_valid_total(cls) -> float:
        return 1.0

    def _total(self, c):
        d = c["psd_log_mse"]
        return d / (1.0 + d)

    def __call__(self, x, target: SpectralTarget, valid=None) -> LossResult:
        xp = array_module(x)
        if not isinstance(target, SpectralTarget):
            raise ValueError(f"target must be a raybrain.spectral.SpectralTarget, got {type(target).__name__}")
        if x.ndim != 3:
            raise ValueError(f"x must have shape (B, T, N), got {tuple(x.shape)}")
        B, T, N = x.shape
        if N != target.n_regions:
            raise ValueError(f"x has N={N} regions but the target spectrum has {target.n_regions}")
        if T < target.nperseg:
            raise ValueError(f"x has T={T} samples, fewer than the target's Welch segment ({target.nperseg})")
        ok = valid_rows(x, valid)
        with np.errstate(all="ignore"):
            clean = xp.where(ok[:, None, None], x, 0.0)
            f, psd = welch(clean, target.fs, target.nperseg)
            emp = xp.asarray(target.psd)
            comps = {
                "psd_log_mse": log_psd_distance(psd, emp, f, self.band),
                "alpha_peak_diff": xp.abs(peak_frequency(f, psd, ALPHA)
                                          - peak_frequency(f, emp[None], ALPHA)).mean(axis=1).astype(xp.float64),
                "gamma_peak_diff": xp.abs(peak_frequency(f, psd, GAMMA)
                                          - peak_frequency(f, emp[None], GAMMA)).mean(axis=1).astype(xp.float64),
            }
            tot = self._total(comps)
        good = ok & xp.isfinite(tot)
        for c in self.components:
            good &= xp.isfinite(comps[c])
        total = xp.where(good, tot, float(self.worst))
        comps = {c: xp.where(good, v, float(self.component_worst[c])) for c, v in comps.items()}
        return LossResult(total=total, components=comps, valid=good, name=self.name)
