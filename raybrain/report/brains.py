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
import re
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
    labels: tuple[str, ...] | None = None  # region names (the subject's), None when unknown
    ei: np.ndarray | None = None  # E/I per region (time-mean S_E / S_I), None without E and I populations
    rates: np.ndarray | None = None  # time-mean excitatory rate r_E per region (Hz), None without one

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


_LEFT = re.compile(r"(^(L|lh|Left|left)[_\s.-])|([_\s.-](L|lh|Left|left)$)|([_\s.-]lh[_\s.-])")
_RIGHT = re.compile(r"(^(R|rh|Right|right)[_\s.-])|([_\s.-](R|rh|Right|right)$)|([_\s.-]rh[_\s.-])")


def hemispheres(labels) -> np.ndarray | None:
    """``"L"`` / ``"R"`` per region from region names that say it (``Precentral_L``, ``lh-insula``,
    ``Right Amygdala``, ``ctx-rh-insula``, ...; ``""`` for a name that says neither, e.g. the vermis), or None when
    there are no labels or no name says left or right."""
    if not labels:
        return None
    out = np.array(["L" if _LEFT.search(str(x)) else "R" if _RIGHT.search(str(x)) else "" for x in labels])
    return out if (out == "L").any() and (out == "R").any() else None


def region_order(labels, n: int) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """A display order of ``n`` regions: the left hemisphere, then the right, then the rest (each
    in the subject's order) when the labels say which is which; else the subject's order. Also
    the blocks ``(name, start, stop)`` in that order (empty when the hemispheres are unknown)."""
    hemi = hemispheres(labels)
    if hemi is None or len(hemi) != n:
        return np.arange(n), []
    order, blocks = [], []
    for h, name in (("L", "left"), ("R", "right"), ("", "other")):
        idx = np.flatnonzero(hemi == h)
        if len(idx):
            blocks.append((name, len(order), len(order) + len(idx)))
            order.extend(idx.tolist())
    return np.array(order), blocks


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
        # FCDs of matched lengths, as the objective scores them (segments of the shorter recording)
        seg = min(n_frames, obj.subject.min_frames or n_frames)
        if seg >= sim.window + sim.step and obj.subject.has_functional:
            fcd_sim = np.asarray(F.segmented_fcd_distribution(bold, sim.window, sim.step, seg), dtype=float)
            try:
                fcd_emp = obj.subject.fcd_distribution(sim.window, sim.step, seg)
            except ValueError:
                fcd_emp = None
        means = getattr(obj.last_result, "means", None) or {}
        ei = None
        if "S_E" in means and "S_I" in means:
            s_e = _asnumpy(means["S_E"]).astype(float).reshape(-1, fc_sim.shape[0]).mean(axis=0)
            s_i = _asnumpy(means["S_I"]).astype(float).reshape(-1, fc_sim.shape[0]).mean(axis=0)
            ei = np.asarray(F.ei_ratio(s_e, s_i), dtype=float)
        rates = None
        if "r_E" in means:
            rates = _asnumpy(means["r_E"]).astype(float).reshape(-1, fc_sim.shape[0]).mean(axis=0)
        labels = getattr(obj.subject, "labels", None)
        out.append(Brain(subject=subject, optimizer=str(row["optimizer"]), run_id=str(row["run_id"]),
                         params=params, fitted_loss=float(row["loss"]), loss=float(rec["loss"]),
                         duration=float(n_frames * tr), seed=int(seed), fc_emp=np.asarray(obj.target.fc, float),
                         fc_sim=fc_sim, fcd_emp=None if fcd_emp is None else np.asarray(fcd_emp, float),
                         fcd_sim=fcd_sim, record=rec, regional=regional_values(cfg, subject, params),
                         labels=tuple(labels) if labels is not None else None, ei=ei, rates=rates))
    return out
