"""The objective: subject + model + parametrisation + loss + simulation settings → records.

:meth:`Objective.evaluate` takes a batch of parameter vectors ``theta`` (B, P), runs them as one
batched simulation (times ``repeats`` noise realisations), scores the simulated BOLD against the
subject's empirical FC/FCD, and returns one record per candidate: its parameters, the loss and its
components (averaged over repeats), mean firing rate, the firing-rate plausibility check
(Zhang et al. 2024: every region's time-averaged r_E in [2.7, 3.3] Hz), the E/I ratio
(mean S_E / mean S_I), a divergence flag and the wall time. A diverged or NaN simulation yields
the loss's finite worst value and ``valid = False``, never an exception.
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
from .integrate import Simulation, SimulationSettings
from .losses import Loss, Target, get_loss
from .models import Model, get_model
from .parametrisation import Parametrisation


def scale_sc(sc, sc_max: float | None):
    """The connectome rescaled so its largest weight is ``sc_max`` (pFIC: 0.02); None keeps it."""
    sc = np.asarray(sc, dtype=np.float64)
    if sc_max is None:
        return sc
    if isinstance(sc_max, bool) or not (isinstance(sc_max, (int, float, np.number)) and math.isfinite(sc_max)
                                        and sc_max > 0):
        raise ValueError(f"sc_max must be None or a finite number > 0, got {sc_max!r}")
    top = sc.max()
    if not top > 0:
        raise ValueError("cannot rescale an all-zero SC")
    return sc * (float(sc_max) / top)


@dataclass
class Objective:
    """Evaluate parameter vectors of ``parametrisation`` on ``subject`` (see module docstring).

    ``settings.tr`` is replaced by the subject's TR; ``window``/``step`` are the FCD window in TRs
    (CBIG: 83 TRs ≈ 60 s at TR 0.72 s). ``sc_max`` rescales the SC so its largest weight is 0.2
    by default (the pMFM convention, Kong 2021): on the bundled HCP connectomes the FIC fixed point
    then holds for G up to ≈ 2.5 and the FC fit peaks near G ≈ 2 (pFIC scales to 0.02 with its own
    SC processing; pass ``sc_max=0.02`` to follow it).
    """

    subject: Subject
    model: Model
    parametrisation: Parametrisation
    loss: Loss | str = "pfic"
    settings: SimulationSettings = field(default_factory=SimulationSettings)
    window: int = 83
    step: int = 1
    sc_max: float | None = 0.2
    plausible_range: tuple[float, float] = F.PLAUSIBLE_RATE_HZ

    def __post_init__(self):
        self.model = get_model(self.model)
        self.loss = get_loss(self.loss) if isinstance(self.loss, str) else self.loss
        if self.subject.tr != self.settings.tr:
            self.settings = self.settings.replace(tr=float(self.subject.tr))
        self.sc = scale_sc(self.subject.sc, self.sc_max)
        n_frames = int(round(self.settings.duration / self.settings.tr))
        needs_fcd = getattr(self.loss, "needs_fcd", True)
        if needs_fcd:
            check_fcd_window(n_frames, self.window, self.step, source="simulation settings (duration / TR)")
        self.target = Target.from_features(
            self.subject.fc(),
            self.subject.fcd_distribution(self.window, self.step) if needs_fcd else None,
            self.window if needs_fcd else None, self.step if needs_fcd else None)

    def simulation(self, theta, *, seed: int | None = None, repeats: int = 1, first_stream: int = 0,
                   duration: float | None = None, state=None, candidates=None) -> Simulation:
        """The batched :class:`Simulation` of ``theta`` (B·repeats runs, candidate-major), not yet run.

        Noise streams are ``first_stream + c_b·repeats + r`` for independent noise and ``r`` for
        common random numbers, where ``c_b`` is candidate ``b``'s number (``candidates``, default
        ``arange(B)``), so a candidate's result does not depend on the rest of the batch. Pass
        ``state`` to continue a stopped simulation (multi-fidelity, checkpoints).
        """
        theta = self.parametrisation.check(theta)
        B, R = theta.shape[0], int(repeats)
        if R < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        settings = self.settings if seed is None else self.settings.replace(seed=int(seed))
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
        return Simulation(self.model, self.sc, params, settings, batch=B * R, streams=streams, state=state)

    def score(self, theta, bold, result, repeats: int = 1, wall_s: float = 0.0) -> list[dict[str, Any]]:
        """Records from simulated BOLD ``(B·repeats, T, N)`` and the run's summaries (``result``)."""
        theta = self.parametrisation.check(theta)
        B, R = theta.shape[0], int(repeats)
        lr = self.loss(bold, self.target, valid=~asnumpy(result.diverged))
        total = asnumpy(lr.total).reshape(B, R)
        comps = {k: asnumpy(v).reshape(B, R) for k, v in lr.components.items()}
        valid = asnumpy(lr.valid).reshape(B, R)
        diverged = asnumpy(result.diverged).reshape(B, R)
        means = {k: asnumpy(v).reshape(B, R, -1) for k, v in result.means.items()}
        sim_seconds = bold.shape[1] * self.settings.tr
        records = []
        for b, pvals in enumerate(self.parametrisation.to_dicts(theta)):
            rec: dict[str, Any] = dict(pvals)
            rec["loss"] = float(total[b].mean())
            for k, v in comps.items():
                rec[k] = float(v[b].mean())
            rec["valid"] = bool(valid[b].all())
            rec["diverged"] = bool(diverged[b].any())
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
            records.append(rec)
        return records

    def evaluate(self, theta, *, seed: int | None = None, repeats: int = 1, first_stream: int = 0,
                 duration: float | None = None) -> list[dict[str, Any]]:
        """Simulate and score a batch: records, one per row of ``theta`` (see :meth:`simulation`)."""
        t0 = time.perf_counter()
        sim = self.simulation(theta, seed=seed, repeats=repeats, first_stream=first_stream, duration=duration)
        res = sim.run()
        self.last_result = res
        return self.score(theta, res.bold, res, repeats=repeats, wall_s=time.perf_counter() - t0)
