"""The checks that tie the sections of an experiment config together.

Each section validates itself (:mod:`raybrain.experiment.schema`); what one section asks of another
is checked here, once the whole config is read (:func:`cross_sections`, the config's ``after``
model validator), and raised as :class:`~raybrain.experiment.errors._At` at the key path to
change:

* the parametrisation names the model's parameters, and its bounds hold the synthetic subjects'
  true values;
* a group averages subjects of one TR;
* a spectral loss (:func:`spectral_fit`) has an M/EEG output (the model's
  ``default_hemodynamics`` is ``"none"``), synthetic subjects only, and ``1/fs`` a whole number
  of steps; a composite spectral + FC loss has a model with a BOLD variant
  (:meth:`raybrain.models.base.Model.bold_variant`) and population runs without successive
  halving;
* each fidelity's time step divides every subject's TR, and when the loss needs the FCD
  (``Loss.needs_fcd``) its duration holds an FCD window;
* a scheduler or successive halving has at least two fidelities; each optimizer's completed
  settings fit the experiment, and the family accepts it (its ``check_experiment`` hook);
* run ids stay distinct after :func:`~raybrain.experiment.names.sanitise`.

:func:`check_subjects` loads the subjects that are not bundled, before any simulation, and names
every one that cannot give finite features.
"""
from __future__ import annotations

import inspect
import math
import re
from typing import TYPE_CHECKING

import numpy as np

from .._text import did_you_mean as _did_you_mean
from . import builder
from .errors import _At
from .names import _expand_ids, _registry

if TYPE_CHECKING:
    from .schema import ExperimentConfig, SyntheticSubject

__all__ = ["cross_sections", "spectral_fit", "check_subjects", "check_synthetic"]


def cross_sections(cfg: ExperimentConfig) -> None:
    """Every check between sections (see the module docstring); raises :class:`_At`."""
    from ..data.validate import check_fcd_window

    model = cfg.model.build()
    sim, subj = cfg.simulation, cfg.subjects
    trs = cfg._subject_trs()
    # parametrisation against the model
    par_cfg = cfg.parametrisation
    for key in ("names", "regional", "globals"):
        for i, n in enumerate(getattr(par_cfg, key) or ()):
            if n not in model.parameter_names:
                raise _At(f"parametrisation.{key}[{i}]", f"model {model.name!r} has no parameter "
                          f"{n!r}{_did_you_mean(n, model.parameter_names)}")
    if par_cfg.parameter is not None and par_cfg.parameter not in model.parameter_names:
        raise _At("parametrisation.parameter", f"model {model.name!r} has no parameter "
                  f"{par_cfg.parameter!r}{_did_you_mean(par_cfg.parameter, model.parameter_names)}")
    try:
        par = par_cfg.build(model, n_regions=builder.n_regions(cfg))
    except ValueError as e:
        m = re.search(r"parameter '([^']+)'", str(e))
        raise _At("parametrisation.bounds" + (f".{m.group(1)}" if m and "bounds" in str(e) else ""),
                  str(e)) from None
    # synthetic truths within the search space
    for i, s in enumerate(subj.synthetic):
        for k, val in s.params.items():
            if k not in par.names:
                raise _At(f"subjects.synthetic[{i}].params.{k}", "not a parameter of the parametrisation"
                          + _did_you_mean(k, par.names))
            lo, hi = par.bounds[par.names.index(k)]
            if not (math.isfinite(val) and lo <= val <= hi):
                raise _At(f"subjects.synthetic[{i}].params.{k}",
                          f"true value {val!r} lies outside the search bounds [{lo:g}, {hi:g}]")
    # groups share a TR
    if subj.group:
        for part in ("train", "validation", "test"):
            names = subj.part(part)
            got = {trs[n] for n in names}
            if len(got) > 1:
                raise _At("subjects.group", f"the {part} subjects have different TRs {sorted(got)} s; "
                          "a group averages subjects scanned with the same TR")
    spectral_fit(cfg, model, trs)
    # time steps, TRs and FCD windows
    needs_fcd = cfg.needs_fcd
    by_tr: dict[float, str] = {}  # one subject per distinct TR
    for n, tr in trs.items():
        by_tr.setdefault(tr, n)
    everyone = sorted(by_tr.items())
    checks = [(f"simulation.fidelities[{i}]", f, everyone) for i, f in enumerate(sim.fidelities)]
    if sim.validation is not None:
        checks.append(("simulation.validation", sim.validation, everyone))
    for i, s in enumerate(subj.synthetic):
        checks.append((f"subjects.synthetic[{i}]", builder.synthetic_fidelity(cfg, s), [(trs[s.name], s.name)]))
    for path, f, subjects in checks:
        for tr, who in subjects:
            try:
                sim.settings(f, tr, backend="numpy")
            except ValueError as e:
                raise _At(f"{path}.dt", f"{e} (subject {who!r}, TR {tr:g} s)") from None
            if needs_fcd:
                try:
                    check_fcd_window(int(round(f.duration / tr)), sim.window, sim.step, source="simulated BOLD")
                except ValueError as e:
                    raise _At(f"{path}.duration", f"{e}: {f.duration:g} s at TR {tr:g} s (subject {who!r}); "
                              "lengthen the duration or shorten simulation.window") from None
    # schedulers need more than one fidelity
    for i, o in enumerate(cfg.optimizers):
        if (o.scheduler in ("asha", "hyperband", "median") or o.halving_eta) and len(sim.fidelities) < 2:
            key, what = (("successive_halving", "successive halving") if o.halving_eta
                         else ("scheduler", f"scheduler {o.scheduler}"))
            raise _At(f"optimizers[{i}].{key}", f"{what} needs at least 2 simulation.fidelities "
                      "(simulated duration is the resource it allocates)")
    for i, o in enumerate(cfg.optimizers):  # settings the experiment completes must fit it (grid: budget)
        try:
            cfg.optimizer_settings(o, len(par.names))
        except ValueError as e:
            raise _At(f"optimizers[{i}].{getattr(e, 'key', 'settings')}", getattr(e, "message", str(e))) from None
    if _registry() is not None:  # what each family asks of the experiment (its check_experiment hook)
        from ..search import family

        for i, o in enumerate(cfg.optimizers):
            try:
                family(o.name).check_experiment(cfg)
            except ValueError as e:
                raise _At(f"optimizers[{i}].{getattr(e, 'key', 'name')}", getattr(e, "message", str(e))) from None
    ids = [r.run_id for r in cfg.runs()]
    dup = {x for x in ids if ids.count(x) > 1}
    if dup:
        raise _At("subjects", f"run ids collide after sanitising: {sorted(dup)[0]!r}; rename a subject")


def spectral_fit(cfg: ExperimentConfig, model, trs) -> None:
    """The checks of a spectral (or composite spectral + FC) fit, by key path; without a spectral
    loss, only that ``simulation.meeg`` is absent."""
    sim, subj = cfg.simulation, cfg.subjects
    name = next(iter(cfg.loss_weights)) if not isinstance(cfg.loss, dict) else "spectral"
    if not cfg.spectral:
        if sim.meeg is not None:
            raise _At("simulation.meeg", f"applies to a spectral loss only (this loss is {cfg.loss!r}); "
                      "remove it or use loss: spectral")
        return
    if sim.meeg is None:
        raise _At("simulation.meeg", f"required by loss {cfg.loss!r}: the M/EEG sampling of the spectral "
                  "fit, e.g. {fs: 250, segment: 1.0}")
    meeg = sim.meeg.build()
    if model.default_hemodynamics != "none":
        key = "model.options.output" if "output" in inspect.signature(type(model).__init__).parameters \
            else "model.name"
        raise _At(key, f"loss {name!r} fits an M/EEG-like signal sampled directly, but {model!r} feeds "
                  "hemodynamics (BOLD); choose an M/EEG output (LaNMM: output P1, P2 or eeg)")
    for key in ("ids", "paths", "cohort"):
        if getattr(subj, key):
            raise _At(f"subjects.{key}", f"loss {name!r} needs an M/EEG spectrum; only subjects.synthetic "
                      "carry one (simulated at simulation.meeg.fs with their true parameters)")
    if subj.group:
        raise _At("subjects.group", f"loss {name!r}: group averages of M/EEG spectra are not supported")
    composite = cfg.fits_fc
    if composite:
        if model.bold_variant() is None:
            raise _At("loss", f"a composite spectral + FC loss needs the BOLD of the same candidates; model "
                      f"{model.name!r} has no BOLD variant")
        for i, o in enumerate(cfg.optimizers):
            if o.mode != "population":
                raise _At(f"optimizers[{i}].mode", "a composite spectral + FC loss runs in population mode only "
                          "(each candidate needs two simulations: M/EEG and BOLD)")
            if o.halving_eta is not None:
                raise _At(f"optimizers[{i}].successive_halving", "not supported with a composite spectral + "
                          "FC loss (two simulations per candidate)")
        if cfg.resources.evaluator == "on":  # auto: off for these (raybrain.evaluator.plan)
            raise _At("resources.evaluator", "the coalescing evaluator does not run composite spectral + FC "
                      "losses; set resources.evaluator: off")
    elif meeg.duration is not None:
        raise _At("simulation.meeg.duration", "applies to a composite loss only; a spectral fit simulates "
                  "the fidelities' durations")
    from ..integrate import SimulationSettings

    fids = [(f"simulation.fidelities[{i}]", f) for i, f in enumerate(sim.fidelities)]
    if sim.validation is not None:
        fids.append(("simulation.validation", sim.validation))
    fids += [(f"subjects.synthetic[{i}]", builder.synthetic_fidelity(cfg, s)) for i, s in enumerate(subj.synthetic)]
    for path, f in fids:
        try:
            SimulationSettings(duration=float(f.duration), dt=float(f.dt), tr=meeg.dt, bold_dt=meeg.dt,
                               hemodynamics="none")
        except ValueError:
            raise _At("simulation.meeg.fs", f"the sampling interval 1/fs = {meeg.dt:g} s must be a whole "
                      f"number of time steps (dt {f.dt:g} s at {path})") from None
        seconds = meeg.duration if composite and meeg.duration is not None else f.duration
        if meeg.samples(seconds) < meeg.nperseg:
            key = "simulation.meeg.duration" if composite and meeg.duration is not None else f"{path}.duration"
            raise _At(key, f"{seconds:g} s of M/EEG is shorter than one Welch segment "
                      f"(simulation.meeg.segment = {meeg.segment:g} s)")


def check_subjects(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """Every problem of every subject that is not bundled, found before any simulation:
    ``[(subject, problem)]``. User and cohort subjects are loaded (files, labels, TR) and must
    give finite features: an FC without NaN and, when the loss needs FCD, a recording long
    enough for the FCD window and an FCD distribution without NaN at the top fidelity's
    segment length. Synthetic subjects' true G must lie where FIC's fixed point is stable
    (else their "empirical" BOLD is a runaway)."""
    from ..data.validate import check_fcd_window

    problems: list[tuple[str, str]] = []
    bundled = set(_expand_ids(cfg.subjects.ids))
    top = cfg.simulation.fidelity("validation" if cfg.simulation.validation else -1)
    for name in cfg.subjects.names():
        if name in bundled:
            continue
        synth = next((s for s in cfg.subjects.synthetic if s.name == name), None)
        try:
            if synth is not None:
                check_synthetic(cfg, synth)
                continue
            subject = cfg.build_subject(name)
            if cfg.fits_fc and not np.all(np.isfinite(subject.fc())):
                raise ValueError("its FC has NaN entries (a region with zero variance)")
            if cfg.needs_fcd:
                if subject.min_frames is not None:
                    check_fcd_window(subject.min_frames, cfg.simulation.window, cfg.simulation.step,
                                     source=subject.source)
                seg = int(round(top.duration / subject.tr))
                if not np.all(np.isfinite(subject.fcd_distribution(cfg.simulation.window,
                                                                   cfg.simulation.step, seg))):
                    raise ValueError("its FCD distribution has NaN entries (a window with a constant region)")
        except ValueError as e:
            problems.append((name, str(e).splitlines()[0]))
    return problems


def check_synthetic(cfg: ExperimentConfig, s: SyntheticSubject) -> None:
    """A synthetic subject whose true G lies beyond FIC's stable range is refused (ValueError)."""
    g = cfg.true_params(s.name).get("G", float(cfg.build_model().parameter("G").default))
    try:
        _, _, high = builder.stable_g(cfg, s.name)
    except ValueError:
        return  # no known fixed point (e.g. FIC off, other models): nothing to check
    if g >= high:
        raise ValueError(f"its true G = {g:g} lies beyond the stable range of FIC's fixed point on "
                         f"{s.connectome().name} (stable up to G = {high:.3g}); its simulated BOLD would run away")
