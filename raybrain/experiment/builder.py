"""What a validated experiment config builds: runs, targets, subjects, parametrisations, objectives.

Every function takes the :class:`~raybrain.experiment.ExperimentConfig` (``cfg``) it builds from;
the config's methods of the same names delegate here. Built subjects, synthetic truths and stable G
ranges are cached on the config (``cfg._cache``, never pickled).

Runs are targets × optimizers × seeds (:func:`runs`); the targets are the training subjects, or
the one group target ``"group"`` (``"group/train"`` under a split) with ``subjects.group``
(:func:`targets`); :func:`holdout_targets` are those a run is re-simulated on after its search.
A synthetic subject is simulated once, from its source connectome with its true parameters
(:func:`simulate_synthetic`; Griffiths et al. 2022), its BOLD (and, for a spectral loss, its
M/EEG signal) becoming its empirical data. ``parametrisation.bounds: {G: auto}`` resolves to
``[default low, margin × min over subjects of the upper edge of the G range where FIC's fixed
point is linearly stable]`` (:func:`auto_bounds`, :func:`raybrain.landscape.stable_g_range`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from .._text import did_you_mean as _did_you_mean
from .names import GROUP, _bare_id, _bundled, _expand_ids, _registry, sanitise

if TYPE_CHECKING:
    from .schema import ExperimentConfig, Fidelity, OptimizerConfig, ParametrisationConfig, SyntheticSubject

__all__ = ["RunSpec", "runs", "targets", "holdout_targets", "truths", "optimizer_settings", "build_subject",
           "simulate_synthetic", "true_params", "source_subject", "parametrisation", "build_parametrisation",
           "build_objective", "objective_from_json", "subject_trs", "synthetic_fidelity", "stable_g_ranges",
           "auto_bounds", "resolved", "excluding", "covariates"]


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: fit ``subject`` with ``optimizer`` from ``seed``."""

    run_id: str
    subject: str
    optimizer: OptimizerConfig
    seed: int
    mode: str


# ----------------------------------------------------------------------------------- runs
def targets(cfg: ExperimentConfig) -> list[str]:
    """The fitted targets: the training subjects, or the one group target."""
    if cfg.subjects.group:
        return [GROUP + ("/train" if cfg.subjects.split is not None else "")]
    return cfg.subjects.part("train")


def holdout_targets(cfg: ExperimentConfig, part: str, subject: str) -> list[str]:
    """The targets a run fitted on ``subject`` is re-simulated on in phase ``part``
    (``"validation"`` or ``"test"``): under ``subjects.split`` the validation or test subjects
    (their group target with ``group: true``); without a split, validation is the run's own subject
    again with fresh noise, and there is no test. None when ``validation.top`` is 0."""
    if part not in ("validation", "test"):
        raise ValueError(f"part must be 'validation' or 'test', got {part!r}")
    if cfg.validation.top == 0:
        return []
    split = cfg.subjects.split
    if split is None or not getattr(split, part):
        return [subject] if part == "validation" else []
    return [f"{GROUP}/{part}"] if cfg.subjects.group else cfg.subjects.part(part)


def optimizer_settings(cfg: ExperimentConfig, opt: OptimizerConfig, dim: int) -> dict[str, Any]:
    """``opt.settings`` completed from the experiment by the family
    (:meth:`~raybrain.search.Optimizer.complete_settings`; e.g. a grid without
    ``points_per_dim`` gets the most points per parameter whose grid fits
    ``budget.evaluations``)."""
    if _registry() is None:
        return dict(opt.settings)
    from ..search import family

    return family(opt.name).complete_settings(opt.settings, dim, cfg.budget.evaluations)


def truths(cfg: ExperimentConfig) -> dict[str, dict[str, float]]:
    """Known parameters of the synthetic training targets: ``{subject: {name: value}}``."""
    return {n: cfg.true_params(n) for n in cfg.targets() if cfg.true_params(n) is not None}


def runs(cfg: ExperimentConfig) -> list[RunSpec]:
    """Targets × optimizers × seeds, in that nesting order; run ids
    ``<subject>__<optimizer key>__seed<k>`` (:func:`~raybrain.experiment.names.sanitise`)."""
    out = []
    for subject in cfg.targets():
        for opt in cfg.optimizers:
            for seed in cfg.seeds:
                rid = "__".join((sanitise(subject), sanitise(opt.key), f"seed{seed}"))
                out.append(RunSpec(rid, subject, opt, int(seed), opt.mode))
    return out


# ----------------------------------------------------------------------------------- subjects
def subject_trs(cfg: ExperimentConfig) -> dict[str, float]:
    """``{subject: TR in s}`` for every subject, known without loading the non-bundled ones (user
    files and cohort subjects without BOLD default to
    :data:`raybrain.data.io.DEFAULT_TR_WITHOUT_BOLD`)."""
    from ..data.io import DEFAULT_TR_WITHOUT_BOLD

    trs = {n: float(_bundled()[n]["tr"]) for n in _expand_ids(cfg.subjects.ids)}
    trs.update({p.name: float(p.tr if p.tr is not None else DEFAULT_TR_WITHOUT_BOLD) for p in cfg.subjects.paths})
    trs.update({s.name: s.source_tr for s in cfg.subjects.synthetic})
    cohort = cfg.subjects.resolved_cohort
    if cohort is not None:
        trs.update({n: float(DEFAULT_TR_WITHOUT_BOLD if tr is None else tr) for n, tr in cohort.trs.items()})
    return trs


def synthetic_fidelity(cfg: ExperimentConfig, s: SyntheticSubject) -> Fidelity:
    """The duration and time step ``s`` is simulated at (default: the last fidelity's)."""
    from .schema import Fidelity

    last = cfg.simulation.fidelities[-1]
    return Fidelity(duration=s.duration or last.duration, dt=s.dt or last.dt)


def n_regions(cfg: ExperimentConfig) -> int | None:
    """The number of regions a ``regional`` parametrisation has (the first bundled or synthetic
    source's, else the first subject's); None for the other kinds."""
    if cfg.parametrisation.kind != "regional":
        return None
    ids = _expand_ids(cfg.subjects.ids) + [s.from_subject for s in cfg.subjects.synthetic
                                           if s.from_subject is not None]
    if ids:
        return int(_bundled()[ids[0]]["n_regions"])
    return int(cfg.build_subject(cfg.subjects.names()[0]).n_regions)


def build_subject(cfg: ExperimentConfig, name: str):
    """The :class:`raybrain.data.Subject` named ``name`` (bundled, user file, synthetic, or a
    group target ``"group"``, ``"group/train"``, ``"group/validation"``, ``"group/test"``),
    cached on the config."""
    if name not in cfg._cache:
        cfg._cache[name] = _make_subject(cfg, name)
    return cfg._cache[name]


def _make_subject(cfg: ExperimentConfig, name: str):
    from ..data import group_average, load_subject

    subj = cfg.subjects
    if name == GROUP or name.startswith(GROUP + "/"):
        part = name.split("/", 1)[1] if "/" in name else None
        if part not in (None, "train", "validation", "test") or (part is None) != (subj.split is None):
            ok = [GROUP] if subj.split is None else [f"{GROUP}/{p}" for p in ("train", "validation", "test")]
            raise ValueError(f"unknown group target {name!r}; this experiment has {', '.join(ok)}")
        members = subj.part(part or "train")
        if not members:
            raise ValueError(f"group target {name!r} has no subjects (subjects.split.{part} is empty)")
        return group_average([cfg.build_subject(m) for m in members], name=name)
    for p in subj.paths:
        if p.name == name:
            return p.load()
    if subj.resolved_cohort is not None and name in subj.resolved_cohort.names:
        return subj.resolved_cohort.load_subject(name)
    for i, s in enumerate(subj.synthetic):
        if s.name == name:
            return simulate_synthetic(cfg, i, s)
    names = subj.names()
    if name not in names:
        full = _bare_id(name, names)
        if full is None:
            raise ValueError(f"subject {name!r} is not part of experiment {cfg.name!r}"
                             + _did_you_mean(name, names + [GROUP]))
        return cfg.build_subject(full)
    return load_subject(name)


def simulate_synthetic(cfg: ExperimentConfig, i: int, s: SyntheticSubject):
    """Simulate ``s`` (``subjects.synthetic[i]``) once (one batch element, noise ``seed`` stream 0)
    from its source connectome; its BOLD (float64) becomes the subject's empirical BOLD and, for a
    spectral loss, its M/EEG signal sampled at ``simulation.meeg.fs`` the subject's ``meeg`` (same
    noise). A composite spectral + FC loss takes the BOLD from the model's
    :meth:`~raybrain.models.base.Model.bold_variant`."""
    from .._backend import asnumpy
    from ..data import Subject
    from ..integrate import Simulation

    src = s.connectome()
    model = cfg.build_model()
    par = cfg.build_parametrisation(src)
    theta = par.from_dict(s.params)
    f = synthetic_fidelity(cfg, s)
    settings = cfg.simulation.settings(f, s.source_tr, seed=s.seed).replace(noise="independent")
    sc = cfg.simulation.normalise(src.sc)
    params = par.to_model_params(theta)

    def run(m, st):
        res = Simulation(m, sc, params, st, batch=1, streams=np.array([0])).run()
        if bool(np.asarray(asnumpy(res.diverged))[0]):
            raise ValueError(f"subjects.synthetic[{i}]: the simulation of {s.name!r} diverged; "
                             "choose other params")
        return np.asarray(asnumpy(res.bold[0]), dtype=np.float64)

    bold = meeg_x = meeg = None
    what = [f"{f.duration:g} s at dt {f.dt:g} s"]
    if cfg.fits_fc:
        bold = run(model.bold_variant() if cfg.spectral else model, settings)
    if cfg.spectral:
        meeg = cfg.simulation.meeg.build()
        ms = settings.replace(tr=meeg.dt, bold_dt=meeg.dt, hemodynamics="none")
        if cfg.fits_fc and meeg.duration is not None:
            ms = ms.replace(duration=meeg.duration)
        meeg_x = run(model, ms)
        what = [f"M/EEG {ms.duration:g} s at {meeg.fs:g} Hz, dt {f.dt:g} s"] + (what if bold is not None else [])
    truth = dict(zip(par.names, map(float, theta[0])))
    subject = Subject(name=s.name, sc=src.sc, tr=s.source_tr, bold=bold, lengths=src.lengths, labels=src.labels,
                      centres=src.centres,
                      meeg=meeg_x, meeg_fs=None if meeg is None else meeg.fs,
                      source=f"synthetic subject {s.name!r} simulated from {src.name} "
                             f"(seed {s.seed}, {'; '.join(what)})")
    cfg._cache[("truth", s.name)] = truth
    return subject


def true_params(cfg: ExperimentConfig, name: str) -> dict[str, float] | None:
    """The known parameters of a synthetic subject (every parametrisation name), else None."""
    for s in cfg.subjects.synthetic:
        if s.name == name:
            if ("truth", name) not in cfg._cache:
                par = cfg.build_parametrisation(source_subject(cfg, name))
                cfg._cache[("truth", name)] = dict(zip(par.names, map(float, par.from_dict(s.params)[0])))
            return dict(cfg._cache[("truth", name)])
    return None


def source_subject(cfg: ExperimentConfig, name: str):
    """Whose connectome and maps a target's simulations use: a synthetic subject's source (the
    maps its truth was defined on), otherwise the subject itself."""
    for s in cfg.subjects.synthetic:
        if s.name == name:
            return s.connectome()
    return cfg.build_subject(name)


def covariates(cfg: ExperimentConfig):
    """The cohort's covariates, a DataFrame with a ``subject`` column then one column per
    covariate (None without a cohort)."""
    cohort = cfg.subjects.resolved_cohort
    if cohort is None:
        return None
    df = cohort.covariates.copy()
    df.index.name = "subject"
    return df.reset_index()


# ----------------------------------------------------------------------------------- parametrisation, objective
def parametrisation(section: ParametrisationConfig, model, subject=None, maps_subject=None,
                    n_regions: int | None = None):
    """The :class:`raybrain.parametrisation.Parametrisation` a ``parametrisation`` section declares
    for ``model`` (maps from ``maps_subject``; without one, placeholder maps that fix the names and
    bounds only, for validation; a ``regional`` one over ``n_regions`` or ``subject``'s regions)."""
    from ..parametrisation import Global, Maps, Regional

    bounds = {k: tuple(v) for k, v in section.bounds.items() if v != "auto"}
    if section.kind == "global":
        return Global(model, names=tuple(section.names or ("G", "sigma")), bounds_override=bounds)
    globals_ = tuple(section.globals if section.globals is not None else ("G",))
    if section.kind == "maps":
        regional = tuple(section.regional or ("w_EE", "w_EI", "sigma"))
        if maps_subject is None:  # names and bounds only (validation)
            return Maps(model, np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]]), regional=regional,
                        globals_=globals_, bounds_override=bounds)
        if section.maps is not None:
            return Maps(model, section.load_maps(maps_subject), regional=regional, globals_=globals_,
                        bounds_override=bounds)
        return Maps.from_subject(model, maps_subject, regional=regional, globals_=globals_,
                                 bounds_override=bounds)
    n = n_regions if n_regions is not None else subject.n_regions
    return Regional(model, n_regions=n, parameter=section.parameter or "w_EE", globals_=globals_,
                    bounds_override=bounds)


def build_parametrisation(cfg: ExperimentConfig, subject):
    """The parametrisation for ``subject`` (a Subject or a name)."""
    if isinstance(subject, str):
        subject = source_subject(cfg, subject)
    maps_subject = subject if cfg.parametrisation.kind == "maps" else None
    return cfg.parametrisation.build(cfg.build_model(), subject=subject, maps_subject=maps_subject)


def build_objective(cfg: ExperimentConfig, subject_name: str, fidelity_index: int | str = -1):
    """The :class:`raybrain.objective.Objective` of one target at one fidelity (an index into
    ``simulation.fidelities`` or ``"validation"``). Pass ``repeats=simulation.repeats`` and the
    run seed to its ``evaluate``."""
    from ..objective import Objective

    subject = cfg.build_subject(subject_name)
    fid = cfg.simulation.fidelity(fidelity_index)
    par = cfg.build_parametrisation(source_subject(cfg, subject_name))
    meeg = cfg.simulation.meeg.build() if cfg.simulation.meeg is not None and cfg.spectral else None
    return Objective(subject, par.model, par, cfg.loss, cfg.simulation.settings(fid, subject.tr),
                     window=cfg.simulation.window, step=cfg.simulation.step,
                     sc_norm=cfg.simulation.sc_scaling[0], sc_max=cfg.simulation.sc_scaling[1],
                     meeg=meeg)


@functools.lru_cache(maxsize=32)
def objective_from_json(text: str, subject: str, fidelity: int | str):
    """:meth:`ExperimentConfig.build_objective` of :func:`~raybrain.experiment.config_from_json`,
    built once per process and (text, subject, fidelity): what trials and the coalescing evaluator
    share."""
    from .schema import config_from_json

    return config_from_json(text).build_objective(subject, fidelity)


# ----------------------------------------------------------------------------------- stable G, auto bounds
def stable_g_ranges(cfg: ExperimentConfig):
    """Per subject, the G range where FIC's fixed point is linearly stable
    (:func:`raybrain.landscape.stable_g_range`, at the model's default parameters, on the
    subject's connectome as the simulations scale it; a synthetic subject's source
    connectome): a DataFrame with ``subject``, ``n_regions``, ``G_low``, ``G_high``."""
    import pandas as pd

    rows = []
    for name in cfg.subjects.names():
        try:
            n, low, high = stable_g(cfg, name)
        except ValueError as e:
            raise ValueError(f"subject {name!r}: {e}") from None
        rows.append({"subject": name, "n_regions": n, "G_low": low, "G_high": high})
    return pd.DataFrame(rows)


def stable_g(cfg: ExperimentConfig, name: str) -> tuple[int, float, float]:
    """``(n_regions, G_low, G_high)`` of subject ``name`` (:func:`stable_g_ranges`), cached;
    ValueError for a model without a known fixed point."""
    key = ("stable_g", name)
    if key not in cfg._cache:
        from ..landscape import stable_g_range

        sc = source_subject(cfg, name).sc
        low, high = stable_g_range(cfg.build_model(), cfg.simulation.normalise(sc))
        cfg._cache[key] = (int(sc.shape[0]), float(low), float(high))
    return cfg._cache[key]


def auto_bounds(cfg: ExperimentConfig, margin: float = 0.95) -> dict[str, tuple[float, float]]:
    """The resolved ``auto`` bounds: for G, ``[default low, margin × min over subjects of the
    upper edge of FIC's linearly stable G range]`` (:func:`stable_g_ranges`). A subject whose
    stable range ends below the low bound is an error naming it."""
    if not cfg.parametrisation.auto:
        return {}
    low = float(cfg.build_model().parameter("G").bounds[0])
    try:
        ranges = cfg.stable_g_ranges()
    except ValueError as e:
        raise ValueError(f"parametrisation.bounds.G: auto: {e}") from None
    bad = ranges[~(margin * ranges["G_high"] > low)]
    if len(bad):
        raise ValueError("parametrisation.bounds.G: auto: " + "; ".join(
            f"subject {r.subject!r}: FIC's fixed point is stable only up to G = {r.G_high:.3g}, below the "
            f"low bound {low:g}" for r in bad.itertuples()) + " (try simulation.sc_norm: spectral, or drop "
            "these subjects)")
    return {"G": (low, float(margin * ranges["G_high"].min()))}


# ----------------------------------------------------------------------------------- derived configs
def excluding(cfg: ExperimentConfig, names) -> ExperimentConfig:
    """``cfg`` with the cohort subjects ``names`` excluded (``on_missing: skip``)."""
    names = list(names)
    if not names:
        return cfg
    data = json.loads(cfg.model_dump_json())
    data["subjects"]["cohort"]["exclude"] = list(dict.fromkeys(data["subjects"]["cohort"]["exclude"] + names))
    return type(cfg).model_validate(data)


def resolved(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with its ``auto`` bounds replaced by numbers (itself when there are none): what the
    runs receive and what ``experiment.json`` records."""
    if not cfg.parametrisation.auto:
        return cfg
    data = json.loads(cfg.model_dump_json())
    data["parametrisation"]["bounds"].update({k: [lo, hi] for k, (lo, hi) in cfg.auto_bounds().items()})
    out = type(cfg).model_validate(data)
    out._cache.update(cfg._cache)
    return out
