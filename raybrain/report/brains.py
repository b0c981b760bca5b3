"""The fitted brains: each subject's best candidate simulated again with the experiment's objective.

:func:`resimulate` rebuilds the experiment (``experiment.json``) and, for each subject's best
training candidate (:func:`raybrain.report.stats.fitted_parameters`), runs one simulation at the
top fidelity's dt, with fresh noise (``seed``), for at most ``max_duration`` seconds of BOLD (but
long enough for one FCD window pair), and computes its FC and FCD distribution next to the
subject's empirical ones. This is the only part of the report that simulates; ``raybrain report
--no-simulate`` skips it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .stats import NothingToShow, as_results, fitted_parameters

DEFAULT_MAX_DURATION = 300.0  # seconds of simulated BOLD per subject
DEFAULT_MAX_SUBJECTS = 8


@dataclass
class Brain:
    """One subject's best fit, simulated again."""

    subject: str
    optimizer: str
    run_id: str
    params: dict[str, float]
    fitted_loss: float          # the training loss it was selected by (top fidelity)
    loss: float                 # the loss of this re-simulation (its duration and noise)
    duration: float             # simulated seconds of BOLD (after burn-in)
    seed: int
    fc_emp: np.ndarray
    fc_sim: np.ndarray
    fcd_emp: np.ndarray | None = None
    fcd_sim: np.ndarray | None = None
    record: dict[str, Any] = field(default_factory=dict)  # Objective.evaluate's record
    regional: dict[str, np.ndarray] = field(default_factory=dict)  # model parameters per region

    @property
    def fc_corr(self) -> float:
        """Pearson r between the upper triangles of simulated and empirical FC."""
        from .. import features as F

        return float(F.corr_upper(self.fc_sim, self.fc_emp))

    @property
    def fcd_ks(self) -> float:
        """KS distance between the simulated and empirical FCD distributions (NaN without FCD)."""
        from .. import features as F

        if self.fcd_sim is None or self.fcd_emp is None:
            return float("nan")
        return float(F.ks_distance(np.asarray(self.fcd_sim, float), np.asarray(self.fcd_emp, float)))


def load_experiment(path):
    """The :class:`raybrain.experiment.ExperimentConfig` saved in ``path/experiment.json``, with its
    storage pointed at ``path``'s parent."""
    from ..experiment import ExperimentConfig

    path = Path(path)
    saved = path / "experiment.json"
    if not saved.is_file():
        raise NothingToShow(f"{path}: no experiment.json, so the experiment cannot be simulated again")
    cfg = ExperimentConfig.model_validate(json.loads(saved.read_text()))
    return cfg.model_copy(update={"storage": str(path.resolve().parent)})


def _asnumpy(x) -> np.ndarray:
    from .._backend import asnumpy

    return np.asarray(asnumpy(x))


def regional_values(cfg, subject: str, params: dict[str, float]) -> dict[str, np.ndarray]:
    """The per-region model parameters a ``maps`` parametrisation derives from ``params``
    (``{name: (N,)}``); empty for the other kinds (a ``regional`` one's parameters are the values)."""
    if cfg is None or cfg.parametrisation.kind != "maps":
        return {}
    par = cfg.build_parametrisation(subject)
    theta = np.array([[float(params[n]) for n in par.names]])
    out = {}
    for k, v in par.to_model_params(theta).items():
        v = np.asarray(v, dtype=float)
        if v.ndim == 2 and v.shape[1] > 1:
            out[k] = v[0]
    return out


def resimulate(path, res=None, *, subjects=None, max_duration: float = DEFAULT_MAX_DURATION, seed: int = 0,
               max_subjects: int = DEFAULT_MAX_SUBJECTS, cfg=None) -> list[Brain]:
    """Simulate the best candidate of each subject again (module docstring): the first
    ``max_subjects`` subjects (or ``subjects``), in order. ``path`` is the results directory
    (``experiment.json`` lives there); ``res`` its loaded results (loaded when None)."""
    from .. import features as F

    cfg = cfg if cfg is not None else load_experiment(path)
    res = as_results(res if res is not None else path)
    fits = fitted_parameters(res)
    if fits.empty:
        raise NothingToShow("no finite training loss at the top fidelity: nothing to simulate")
    if subjects is not None:
        fits = fits[fits["subject"].isin(list(subjects))]
    fits = fits.head(max_subjects)
    if not (isinstance(max_duration, (int, float)) and math.isfinite(max_duration) and max_duration > 0):
        raise ValueError(f"max_duration must be a positive number of seconds, got {max_duration!r}")
    sim = cfg.simulation
    out = []
    for _, row in fits.iterrows():
        subject = str(row["subject"])
        obj = cfg.build_objective(subject, -1)
        if obj.target is None:
            raise NothingToShow("a spectral (M/EEG) fit has no FC target to compare")
        par = obj.parametrisation
        params = {n: float(row[n]) for n in par.names}
        bold_settings = getattr(obj, "bold_settings", None) or obj.settings
        tr = bold_settings.tr
        top = float(bold_settings.duration)
        # long enough for at least 2 FCD windows, never longer than the top fidelity
        need = (sim.window + sim.step + 1) * tr
        duration = min(top, max(float(max_duration), need))
        theta = np.array([[params[n] for n in par.names]])
        rec = obj.evaluate(theta, seed=seed, repeats=1, duration=duration)[0]
        last = obj.last_bold_result if getattr(obj, "composite", False) else obj.last_result
        bold = _asnumpy(last.bold)[0].astype(np.float64)
        fc_sim = np.asarray(F.fc(bold), dtype=float)
        n_frames = bold.shape[0]
        fcd_sim = fcd_emp = None
        if n_frames >= sim.window + sim.step:
            fcd_sim = np.asarray(F.fcd_distribution(bold, sim.window, sim.step), dtype=float)
        if obj.target.has_fcd:
            fcd_emp = obj.target.fcd_dist
        else:
            try:
                fcd_emp = obj.subject.fcd_distribution(sim.window, sim.step)
            except ValueError:
                fcd_emp = None
        out.append(Brain(subject=subject, optimizer=str(row["optimizer"]), run_id=str(row["run_id"]),
                         params=params, fitted_loss=float(row["loss"]), loss=float(rec["loss"]),
                         duration=float(n_frames * tr), seed=int(seed), fc_emp=np.asarray(obj.target.fc, float),
                         fc_sim=fc_sim, fcd_emp=None if fcd_emp is None else np.asarray(fcd_emp, float),
                         fcd_sim=fcd_sim, record=rec, regional=regional_values(cfg, subject, params)))
    return out
