"""The objective: subject + model + parametrisation + loss + simulation settings → records.

:meth:`Objective.evaluate` takes a batch of parameter vectors ``theta`` (B, P), runs them as one
batched simulation (times ``repeats`` noise realisations), scores the simulated BOLD against the
subject's empirical FC/FCD, and returns one record per candidate: its parameters, the loss and its
components (averaged over repeats), mean firing rate, the firing-rate plausibility check
(Zhang et al. 2024: every region's time-averaged r_E in [2.7, 3.3] Hz), the E/I ratio
(mean S_E / mean S_I), a divergence flag, the simulation wall time and, apart from it, the kernel compile time. A diverged or NaN simulation yields
the loss's finite worst value and ``valid = False``, never an exception.

**Spectral fits** (:mod:`raybrain.spectral`). With ``loss="spectral"`` the simulated signal is the
model's M/EEG-like output (e.g. the LaNMM's ``v_P1 + v_P2``) sampled at ``meeg.fs`` with
hemodynamics ``"none"``, scored against the subject's M/EEG spectrum (``subject.meeg``); records
then carry ``alpha_power``, ``gamma_power``, ``alpha_peak_hz``, ``gamma_peak_hz`` (the simulated
signal's, averaged over regions and repeats) besides the loss components. A composite loss
(``{"spectral": 1.0, "fc_corr": 0.5}`` → :class:`raybrain.losses.CompositeLoss`) needs two
outputs per candidate: :meth:`Objective.evaluate` runs the M/EEG simulation and, with the same
noise streams, the model's BOLD variant (``model.bold_variant()``) at the subject's TR;
components come back prefixed (``spectral.psd_log_mse``, ``fc_corr.fc_corr``, ...).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from . import features as F
from ._backend import asnumpy
from .data import Subject
from .data.validate import check_fcd_window
from .connectome import DEFAULT_VALUES, check_norm, normalise
from .integrate import Simulation, SimulationSettings
from .losses import CompositeLoss, Loss, SpectralLoss, Target, get_loss
from .models import Model, get_model
from .parametrisation import Parametrisation
from .spectral import MEEGSettings, SpectralTarget, spectral_features


def build_loss(spec) -> Loss | CompositeLoss:
    """A loss from a name (``"pfic"``, ``"spectral"``, ...), a loss object, or a mapping
    ``{name: weight}`` (a :class:`~raybrain.losses.CompositeLoss` whose parts are named by the
    loss names, e.g. ``{"spectral": 1.0, "fc_corr": 0.5}``; a one-entry mapping of weight 1 is the
    loss itself)."""
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError("a composite loss needs at least one {name: weight} entry")
        parts = {}
        for k, w in spec.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise ValueError(f"weight of loss {k!r} must be a number, got {w!r}")
            parts[str(k)] = (get_loss(k), float(w))
        spectral = [k for k, (lo, _) in parts.items() if isinstance(lo, SpectralLoss)]
        if len(spectral) > 1:
            raise ValueError(f"a composite loss takes at most one spectral part, got {spectral}")
        if len(parts) == 1 and next(iter(parts.values()))[1] == 1.0:
            return next(iter(parts.values()))[0]
        return CompositeLoss(parts)
    return get_loss(spec) if isinstance(spec, str) else spec


def loss_parts(loss) -> dict:
    """``{part name: loss}`` of a loss (a plain loss is one part named by its ``name``)."""
    if isinstance(loss, CompositeLoss):
        return {k: lo for k, (lo, _) in loss.parts.items()}
    return {getattr(loss, "name", "loss"): loss}


def scale_sc(sc, sc_max: float | None):
    """The connectome rescaled so its largest weight is ``sc_max`` (pFIC: 0.02); None keeps it.

    ``normalise(sc, "max", sc_max)`` (:mod:`raybrain.connectome`, which offers other norms)."""
    if sc_max is None:
        return np.asarray(sc, dtype=np.float64)
    return normalise(sc, "max", sc_max)


@dataclass
class Objective:
    """Evaluate parameter vectors of ``parametrisation`` on ``subject`` (see module docstring).

    ``settings.tr`` is replaced by the subject's TR; ``window``/``step`` are the FCD window in TRs
    (CBIG: 83 TRs ≈ 60 s at TR 0.72 s).

    The SC is rescaled by :func:`raybrain.connectome.normalise`: ``sc_norm`` chooses the statistic
    (``"max"``: largest weight, ``"spectral"``: spectral radius, ``"strength"``: mean node
    strength, ``"none"``) and ``sc_max`` the value it is set to; left at ``"default"`` it is that
    norm's default (:data:`raybrain.connectome.DEFAULT_VALUES`: 0.2 for ``"max"``), and None keeps
    the SC as given (like ``sc_norm="none"``). After construction :attr:`sc_max` holds the value
    used. The default, largest weight 0.2, is the pMFM convention (Kong 2021): on the bundled HCP
    connectomes the FIC fixed point then holds for G up to ≈ 2.8 and the FC fit peaks near G ≈ 2
    (pFIC scales to 0.02 with its own SC processing; pass ``sc_max=0.02`` to follow it). Other
    parcellations lose FIC's fixed point at much smaller G under it; ``sc_norm="spectral"`` keeps
    the stable G range comparable (:mod:`raybrain.landscape`).

    The empirical FCD is computed on segments as long as the simulated BOLD (T_sim frames; the
    recording is cut into floor(T_emp / T_sim) non-overlapping segments, their FCDs pooled), and
    a simulation longer than the recording is cut likewise: the share of overlapping window pairs,
    and with it the FCD distribution, depends on the recording's length, so FCDs of unequal
    lengths would bias KS(FCD) (:func:`raybrain.features.segmented_fcd_distribution`).
    """

    subject: Subject
    model: Model
    parametrisation: Parametrisation
    loss: Loss | str = "pfic"
    settings: SimulationSettings = field(default_factory=SimulationSettings)
    window: int = 83
    step: int = 1
    sc_max: float | str | None = "default"
    plausible_range: tuple[float, float] = F.PLAUSIBLE_RATE_HZ
    meeg: MEEGSettings | None = None
    sc_norm: str = "max"

    def __post_init__(self):
        self.model = get_model(self.model)
        self.loss = build_loss(self.loss)
        check_norm(self.sc_norm, source="sc_norm")
        if isinstance(self.sc_max, str):
            if self.sc_max != "default":
                raise ValueError(f"sc_max must be a number > 0, None or 'default', got {self.sc_max!r}")
            self.sc_max = DEFAULT_VALUES[self.sc_norm]
        norm = "none" if self.sc_max is None else self.sc_norm
        self.sc = normalise(self.subject.sc, norm, self.sc_max)
        parts = loss_parts(self.loss)
        #: name of the spectral part (None: no spectral fit) and of the FC parts
        self.spectral_part = next((k for k, lo in parts.items() if isinstance(lo, SpectralLoss)), None)
        fc_parts = [k for k, lo in parts.items() if not isinstance(lo, SpectralLoss)]
        self.composite = self.spectral_part is not None and bool(fc_parts)
        bold_settings = self.settings
        if self.subject.tr != bold_settings.tr:
            bold_settings = bold_settings.replace(tr=float(self.subject.tr))
        #: the BOLD simulation settings (the main ones unless the fit is spectral), None without FC
        self.bold_settings = bold_settings if fc_parts else None
        self.bold_model = None
        if fc_parts:
            needs_fcd = any(getattr(parts[k], "needs_fcd", True) for k in fc_parts)
            n_frames = int(round(bold_settings.duration / bold_settings.tr))
            if needs_fcd:
                check_fcd_window(n_frames, self.window, self.step, source="simulation settings (duration / TR)")
            # FCDs of equal length: the recording is cut into segments as long as the simulation
            # (or the simulation into segments as long as the shortest recording), pooled
            seg = min(n_frames, self.subject.min_frames or n_frames)
            self.target = Target.from_features(
                self.subject.fc(),
                self.subject.fcd_distribution(self.window, self.step, seg) if needs_fcd else None,
                self.window if needs_fcd else None, self.step if needs_fcd else None,
                seg if needs_fcd else None)
        else:
            self.target = None  # a spectral-only fit has no FC target
        self.spectral_target = None
        if self.spectral_part is None:
            self.settings = bold_settings
            return
        if self.meeg is None:
            raise ValueError("a spectral loss needs meeg settings (raybrain.spectral.MEEGSettings: fs, segment)")
        if self.subject.meeg is None:
            raise ValueError(f"subject {self.subject.name!r} has no M/EEG signal (subject.meeg) to fit a spectrum to")
        if not math.isclose(self.subject.meeg_fs, self.meeg.fs, rel_tol=1e-9):
            raise ValueError(f"subject {self.subject.name!r} was recorded at {self.subject.meeg_fs:g} Hz but the "
                             f"fit samples at meeg.fs = {self.meeg.fs:g} Hz")
        self.spectral_target = SpectralTarget.from_signal(self.subject.meeg, self.meeg.fs, self.meeg.nperseg)
        meeg_settings = self.settings.replace(tr=self.meeg.dt, bold_dt=self.meeg.dt, hemodynamics="none")
        if self.composite:
            if self.meeg.duration is not None:
                meeg_settings = meeg_settings.replace(duration=float(self.meeg.duration))
            variant = self.model.bold_variant()
            if variant is None:
                raise ValueError(f"model {self.model.name!r} has no BOLD variant (bold_variant()): it cannot "
                                 "give the BOLD of a composite spectral + FC loss")
            self.bold_model = variant
        elif self.meeg.duration is not None:
            raise ValueError("meeg duration applies to a composite loss only (a spectral fit simulates the "
                             "fidelity's duration)")
        if self.meeg.samples(meeg_settings.duration) < self.meeg.nperseg:
            raise ValueError(f"the simulated M/EEG ({meeg_settings.duration:g} s) is shorter than one Welch "
                             f"segment ({self.meeg.segment:g} s)")
        self.settings = meeg_settings

    def target_for(self, frames: int) -> Target | None:
        """The FC/FCD target for a simulated BOLD of ``frames`` frames: :attr:`target` when the
        simulation has the settings' length, else one whose FCD is pooled over segments of the
        matching length (cached); None for a spectral-only fit."""
        t = self.target
        if t is None or not t.has_fcd:
            return t
        seg = min(int(frames), self.subject.min_frames or int(frames))
        if seg == t.segment:
            return t
        cache = self.__dict__.setdefault("_targets", {})
        if seg not in cache:
            check_fcd_window(seg, self.window, self.step, source=f"a simulation of {frames} frames")
            cache[seg] = Target.from_features(t.fc, self.subject.fcd_distribution(self.window, self.step, seg),
                                              self.window, self.step, seg)
        return cache[seg]

    def simulation(self, theta, *, seed: int | None = None, repeats: int = 1, first_stream: int = 0,
                   duration: float | None = None, state=None, candidates=None, bold: bool = False) -> Simulation:
        """The batched :class:`Simulation` of ``theta`` (B·repeats runs, candidate-major), not yet run.

        Noise streams are ``first_stream + c_b·repeats + r`` for independent noise and ``r`` for
        common random numbers, where ``c_b`` is candidate ``b``'s number (``candidates``, default
        ``arange(B)``), so a candidate's result does not depend on the rest of the batch. Pass
        ``state`` to continue a stopped simulation (multi-fidelity, checkpoints). ``bold=True``
        gives the BOLD half of a composite spectral + FC fit (same noise streams).
        """
        theta = self.parametrisation.check(theta)
        B, R = theta.shape[0], int(repeats)
        if R < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if bold and not self.composite:
            raise ValueError("bold=True is for composite (spectral + FC) losses; this objective simulates one signal")
        model = self.bold_model if bold else self.model
        settings = self.bold_settings if bold else self.settings
        settings = settings if seed is None else settings.replace(seed=int(seed))
        if duration is not None:
            settings = settings.replace(duration=float(duration))
        params = self.parametrisation.to_model_params(theta)
        params = {k: np.repeat(np.asarray(v), R, axis=0) for k, v in params.items()}
        if settings.noise == "common":
            streams = np.tile(np.arange(R), B)
        else:
            c = np.arange(B) if candidates is None else np.asarray(candidates, dtype=np.int64).reshape(-1)
            if c.shape != (B,) or (c.size and c.min() < 0):
                raise ValueError(f"candidates must be {B} non-negative candidate numbers, got {candidates!r}")
            streams = (first_stream + c[:, None] * R + np.arange(R)).ravel()
        return Simulation(model, self.sc, params, settings, batch=B * R, streams=streams, state=state)

    def score(self, theta, bold, result, repeats: int = 1, wall_s: float = 0.0, *,
              bold_signal=None, bold_result=None, compile_s: float = 0.0) -> list[dict[str, Any]]:
        """Records from the simulated signal ``bold`` ``(B·repeats, T, N)`` (BOLD, or the M/EEG signal
        of a spectral fit) and the run's summaries (``result``). A composite loss also needs the
        BOLD of the same candidates: ``bold_signal`` (and its run's ``bold_result``). ``wall_s``
        (simulation and scoring) and ``compile_s`` (getting the compiled kernels:
        :meth:`raybrain.integrate.Simulation.prepare`) are the batch's; each record gets its share."""
        theta = self.parametrisation.check(theta)
        B, R = theta.shape[0], int(repeats)
        diverged = asnumpy(result.diverged)
        if self.composite:
            if bold_signal is None:
                raise ValueError("a composite (spectral + FC) loss needs the BOLD of the same candidates "
                                 "(bold_signal): use Objective.evaluate")
            if bold_result is not None:
                diverged = diverged | asnumpy(bold_result.diverged)
        if isinstance(self.loss, CompositeLoss):
            fc_signal = bold_signal if self.composite else bold
            signals = {k: (bold if k == self.spectral_part else fc_signal) for k in self.loss.parts}
            fc_target = self.target_for(fc_signal.shape[1])
            targets = {k: (self.spectral_target if k == self.spectral_part else fc_target) for k in self.loss.parts}
            lr = self.loss(signals, targets, valid=~diverged)
        else:
            lr = self.loss(bold, self.target_for(bold.shape[1]) if self.spectral_part is None else self.spectral_target,
                           valid=~diverged)
        feats = None
        if self.spectral_part is not None:
            feats = {k: asnumpy(v).reshape(B, R) for k, v in
                     spectral_features(bold, self.meeg.fs, self.meeg.nperseg).items()}
        total = asnumpy(lr.total).reshape(B, R)
        comps = {k: asnumpy(v).reshape(B, R) for k, v in lr.components.items()}
        valid = asnumpy(lr.valid).reshape(B, R)
        diverged = diverged.reshape(B, R)
        means = {k: asnumpy(v).reshape(B, R, -1) for k, v in result.means.items()}
        sim_seconds = bold.shape[1] * self.settings.tr
        if bold_signal is not None and self.bold_settings is not None:
            sim_seconds = max(sim_seconds, bold_signal.shape[1] * self.bold_settings.tr)
        records = []
        for b, pvals in enumerate(self.parametrisation.to_dicts(theta)):
            rec: dict[str, Any] = dict(pvals)
            rec["loss"] = float(total[b].mean())
            # the standard error of that mean over the R noise repeats (sample sd / sqrt(R)); None for R = 1
            rec["loss_se"] = float(total[b].std(ddof=1) / math.sqrt(R)) if R > 1 else None
            for k, v in comps.items():
                rec[k] = float(v[b].mean())
            rec["valid"] = bool(valid[b].all())
            rec["diverged"] = bool(diverged[b].any())
            if feats is not None:
                for k, v in feats.items():
                    rec[k] = float(v[b].mean()) if rec["valid"] else None
            if "r_E" in means:
                rate = means["r_E"][b].mean(axis=0)  # (N,) averaged over repeats
                rec["rate_mean"] = float(rate.mean())
                rec["rate_min"] = float(rate.min())
                rec["rate_max"] = float(rate.max())
                rec["plausible"] = bool(F.plausible(rate, *self.plausible_range)) and rec["valid"]
            if "S_E" in means and "S_I" in means:
                ei = F.ei_ratio(means["S_E"][b].mean(axis=0), means["S_I"][b].mean(axis=0))
                rec["ei_ratio"] = float(np.mean(ei))
            rec = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in rec.items()}
            rec["repeats"] = R
            rec["sim_seconds"] = float(sim_seconds)
            rec["wall_s"] = wall_s / B
            rec["compile_s"] = compile_s / B
            records.append(rec)
        return records

    def evaluate(self, theta, *, seed: int | None = None, repeats: int = 1, first_stream: int = 0,
                 duration: float | None = None) -> list[dict[str, Any]]:
        """Simulate and score a batch: records, one per row of ``theta`` (see :meth:`simulation`)."""
        t0 = time.perf_counter()
        sim = self.simulation(theta, seed=seed, repeats=repeats, first_stream=first_stream,
                              duration=None if self.composite else duration)
        compile_s = sim.prepare()  # kernel compile / load, recorded apart from the simulation's wall time
        t0 += compile_s
        res = sim.run()
        self.last_result = res
        if not self.composite:
            return self.score(theta, res.bold, res, repeats=repeats, wall_s=time.perf_counter() - t0,
                              compile_s=compile_s)
        bsim = self.simulation(theta, seed=seed, repeats=repeats, first_stream=first_stream, duration=duration,
                               bold=True)
        c = bsim.prepare()
        compile_s, t0 = compile_s + c, t0 + c
        bres = bsim.run()
        self.last_bold_result = bres
        return self.score(theta, res.bold, res, repeats=repeats, wall_s=time.perf_counter() - t0,
                          bold_signal=bres.bold, bold_result=bres, compile_s=compile_s)
