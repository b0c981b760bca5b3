r"""Power spectra of batched M/EEG-like signals (NumPy or CuPy): the features of spectral fits.

Signals are ``(B, T, N)`` (batch, time, regions) sampled at ``fs`` Hz, as a
:class:`raybrain.integrate.Simulation` returns them with ``hemodynamics="none"`` and
``tr = bold_dt`` (e.g. 1 kHz).

- :func:`welch` — Welch's averaged periodogram: Hann window, ``nperseg`` samples, 50 % overlap,
  each segment's mean removed, one-sided density in signal-units²/Hz; ``(B, F, N)``.
  Frequency resolution ``fs / nperseg``.
- :func:`band_power` — ``∑ P(f) Δf`` over ``lo <= f <= hi``; bands :data:`ALPHA` = 8–12 Hz and
  :data:`GAMMA` = 30–80 Hz.
- :func:`peak_frequency` — the frequency of the largest PSD bin inside a band.
- :func:`log_psd_distance` — mean over frequencies in ``fit_band`` and regions of
  ``(log10 P_sim - log10 P_emp)²`` (a floor of ``1e-30`` keeps zero power finite).
- :class:`SpectralTarget` — an empirical spectrum, the target of the spectral loss.
- :class:`MEEGSettings` — how an M/EEG-like signal is sampled and analysed in a fit (``fs``, Welch
  ``segment``, fit ``band``, optional ``duration``); :func:`spectral_features` — per-candidate
  alpha/gamma band power and peak frequency (the record columns of spectral fits).

The losses built on these features live in :mod:`raybrain.losses`:
:class:`raybrain.losses.spectral.SpectralLoss` (registered as ``"spectral"``; cost ``d / (1 + d)``
with ``d`` the log-PSD distance) and :class:`raybrain.losses.composite.CompositeLoss` (a weighted
sum of losses, e.g. FC correlation on BOLD plus the spectral loss on the LFP of the same
candidates). Importing this module imports nothing from :mod:`raybrain.losses`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._backend import array_module, asnumpy

ALPHA = (8.0, 12.0)
GAMMA = (30.0, 80.0)
FIT_BAND = (2.0, 100.0)
_FLOOR = 1e-30

__all__ = ["ALPHA", "GAMMA", "FIT_BAND", "welch", "band_power", "peak_frequency", "log_psd_distance",
           "SpectralTarget", "MEEGSettings", "spectral_features", "FEATURE_COLUMNS"]

#: record columns of :func:`spectral_features` (simulated signal, averaged over regions)
FEATURE_COLUMNS = ("alpha_power", "gamma_power", "alpha_peak_hz", "gamma_peak_hz")


def welch(x, fs: float, nperseg: int | None = None):
    """Welch PSD of ``x`` (B, T, N) along time: returns ``(freqs (F,) NumPy, psd (B, F, N))``."""
    xp = array_module(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, T, N), got {tuple(x.shape)}")
    T = x.shape[1]
    L = int(nperseg) if nperseg is not None else min(T, int(round(2 * fs)))
    if not (2 <= L <= T):
        raise ValueError(f"nperseg must be in [2, T={T}], got {L}")
    hop = max(1, L // 2)
    starts = np.arange(0, T - L + 1, hop)
    idx = xp.asarray(starts[:, None] + np.arange(L)[None, :])  # (S, L)
    seg = x[:, idx, :].astype(xp.float64)  # (B, S, L, N)
    seg = seg - seg.mean(axis=2, keepdims=True)
    n = np.arange(L)
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / L)  # periodic Hann (as scipy.signal.welch)
    w = xp.asarray(win)[None, None, :, None]
    spec = xp.fft.rfft(seg * w, axis=2)
    psd = (spec.real ** 2 + spec.imag ** 2).mean(axis=1) / (fs * float((win ** 2).sum()))  # (B, F, N)
    scale = np.full(psd.shape[1], 2.0)
    scale[0] = 1.0
    if L % 2 == 0:
        scale[-1] = 1.0
    psd = psd * xp.asarray(scale)[None, :, None]
    return np.fft.rfftfreq(L, 1.0 / fs), psd


def _mask(freqs, band):
    lo, hi = band
    m = (np.asarray(freqs) >= lo) & (np.asarray(freqs) <= hi)
    if not m.any():
        raise ValueError(f"no frequency bin inside the band {band} Hz (resolution {freqs[1] - freqs[0]:g} Hz)")
    return m


def band_power(freqs, psd, band):
    """Power in ``band`` = (lo, hi) Hz: ``sum P(f) df`` over the bins inside it; (B, N)."""
    m = _mask(freqs, band)
    df = float(freqs[1] - freqs[0])
    return psd[:, np.flatnonzero(m), :].sum(axis=1) * df


def peak_frequency(freqs, psd, band):
    """Frequency (Hz) of the largest PSD bin inside ``band``; (B, N) NumPy-or-CuPy array."""
    xp = array_module(psd)
    m = np.flatnonzero(_mask(freqs, band))
    f = xp.asarray(np.asarray(freqs)[m])
    return f[xp.argmax(psd[:, m, :], axis=1)]


def log_psd_distance(psd_sim, psd_emp, freqs, band=FIT_BAND):
    """Mean squared log10-PSD difference over ``band`` and regions; ``psd_sim`` (B, F, N),
    ``psd_emp`` (F, N) or (B, F, N). Returns (B,)."""
    xp = array_module(psd_sim)
    m = np.flatnonzero(_mask(freqs, band))
    a = xp.log10(xp.maximum(psd_sim[:, m, :], _FLOOR))
    e = xp.asarray(psd_emp)
    e = e[None] if e.ndim == 2 else e
    b = xp.log10(xp.maximum(e[:, m, :], _FLOOR))
    return ((a - b) ** 2).mean(axis=(1, 2))


@dataclass(frozen=True, eq=False)
class SpectralTarget:
    """An empirical spectrum: ``psd`` (F, N) on ``freqs`` (F,) Hz, from signals sampled at ``fs``
    with Welch segments of ``nperseg`` samples (simulations are analysed the same way)."""

    psd: np.ndarray
    freqs: np.ndarray
    fs: float
    nperseg: int

    @classmethod
    def from_signal(cls, x, fs: float, nperseg: int | None = None) -> "SpectralTarget":
        """From one recording ``x`` (T, N) (or (1, T, N))."""
        a = np.asarray(asnumpy(x), dtype=np.float64)
        a = a[None] if a.ndim == 2 else a
        if a.ndim != 3 or a.shape[0] != 1:
            raise ValueError(f"x must have shape (T, N), got {np.shape(x)}")
        if not np.all(np.isfinite(a)):
            raise ValueError("x has non-finite values")
        L = int(nperseg) if nperseg is not None else min(a.shape[1], int(round(2 * fs)))
        f, p = welch(a, fs, L)
        return cls(psd=p[0], freqs=f, fs=float(fs), nperseg=L)

    @property
    def n_regions(self) -> int:
        return self.psd.shape[1]


@dataclass(frozen=True)
class MEEGSettings:
    """How the M/EEG-like signal of a spectral fit is sampled and analysed.

    ``fs`` (Hz): the model output is sampled every ``1/fs`` s (hemodynamics ``"none"``; ``1/fs``
    must be a whole number of time steps). ``segment`` (s): Welch segment length, so the frequency
    resolution is ``1/segment`` Hz (``nperseg = round(segment·fs)``). ``band`` (Hz): where
    the log-PSD distance is taken. ``duration`` (s): simulated M/EEG time after the burn-in; None
    (default) takes the fidelity's duration. With a composite loss the fidelity's duration is the
    BOLD's, and ``duration`` lets the M/EEG run be much shorter.
    """

    fs: float = 250.0
    segment: float = 1.0
    band: tuple = FIT_BAND
    duration: float | None = None

    def __post_init__(self):
        for k in ("fs", "segment"):
            v = getattr(self, k)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"meeg {k} must be a positive number, got {v!r}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"meeg duration must be a positive number of seconds, got {self.duration!r}")
        band = tuple(float(b) for b in self.band)
        object.__setattr__(self, "band", band)
        if len(band) != 2 or not (0 <= band[0] < band[1]):
            raise ValueError(f"meeg band must be [low, high] Hz with 0 <= low < high, got {list(self.band)}")
        if self.nperseg < 2:
            raise ValueError(f"meeg segment {self.segment:g} s at fs {self.fs:g} Hz is shorter than 2 samples")
        nyq = self.fs / 2.0
        top = max(band[1], GAMMA[1])
        if top > nyq:
            raise ValueError(f"meeg fs {self.fs:g} Hz: its Nyquist frequency {nyq:g} Hz lies below "
                             f"{top:g} Hz (the fit band / gamma band); raise fs to at least {2 * top:g} Hz")
        res = 1.0 / self.segment
        for name, (lo, hi) in (("alpha", ALPHA), ("gamma", GAMMA), ("fit", band)):
            if math.floor(hi / res + 1e-9) < math.ceil(lo / res - 1e-9):
                raise ValueError(f"meeg segment {self.segment:g} s (resolution {res:g} Hz) has no frequency "
                                 f"bin in the {name} band {lo:g}-{hi:g} Hz; lengthen the segment")

    @property
    def dt(self) -> float:
        """Sampling interval ``1/fs`` (s)."""
        return 1.0 / float(self.fs)

    @property
    def nperseg(self) -> int:
        return int(round(self.segment * self.fs))

    def samples(self, duration: float) -> int:
        return int(round(duration * self.fs))


def spectral_features(x, fs: float, nperseg: int) -> dict:
    """Alpha/gamma band power and peak frequency of ``x`` (B, T, N), each averaged over regions:
    ``{"alpha_power", "gamma_power", "alpha_peak_hz", "gamma_peak_hz"}`` -> (B,) float64 arrays
    (NaN where ``x`` is not finite). Bands :data:`ALPHA`, :data:`GAMMA`."""
    xp = array_module(x)
    with np.errstate(all="ignore"):
        f, psd = welch(x, fs, nperseg)
        out = {
            "alpha_power": band_power(f, psd, ALPHA).mean(axis=1),
            "gamma_power": band_power(f, psd, GAMMA).mean(axis=1),
            "alpha_peak_hz": peak_frequency(f, psd, ALPHA).astype(xp.float64).mean(axis=1),
            "gamma_peak_hz": peak_frequency(f, psd, GAMMA).astype(xp.float64).mean(axis=1),
        }
        ok = xp.all(xp.isfinite(x), axis=(1, 2))
    return {k: xp.where(ok, v.astype(xp.float64), np.nan) for k, v in out.items()}
