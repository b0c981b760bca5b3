"""Experiment configuration: one YAML file → a validated :class:`ExperimentConfig`.

An experiment names its subjects, model, parametrisation and bounds, loss, simulation settings per
fidelity, optimizers, budget, seeds, resources and storage. :func:`load_config` reads the YAML
(``yaml.safe_load``) and validates everything once, at load: every error names its key path and the
problem, e.g. ``optimizers[2].name: unknown optimizer 'cmaa' (did you mean 'cmaes'?)`` or
``simulation.fidelitees: unknown key (did you mean 'fidelities'?)``. Past that point the rest of
raybrain trusts the config.

>>> cfg = load_config("experiments/quickstart.yaml")          # doctest: +SKIP
>>> [r.run_id for r in cfg.runs()][:1]                         # doctest: +SKIP
['hcp-101309__random__seed0']
>>> obj = cfg.build_objective("hcp/101309", 0)                 # doctest: +SKIP

Subjects
--------
``subjects.ids`` holds bundled subjects (``"hcp/101309"`` or the bare id ``"101309"``) or whole
datasets (``"hcp"``, ``"gw"``, ``"all"``); ``subjects.paths`` user files; ``subjects.cohort`` a
whole cohort from a participants table and path patterns (:class:`CohortConfig`,
:mod:`raybrain.data.cohort`; its covariates travel into ``covariates.tsv``); ``subjects.synthetic``
subjects simulated from a bundled connectome or a connectome file with known parameters, whose
simulated BOLD is their "empirical" BOLD, so fitting them is a parameter-recovery experiment
(Griffiths et al. 2022). Before any simulation, ``raybrain run`` loads every subject that is not
bundled and names, in one message, every one that cannot give finite features
(:meth:`ExperimentConfig.check_subjects`).

Connectome scaling
------------------
``simulation.sc_norm`` (default ``spectral``: spectral radius 0.49; ``max``: largest weight,
``sc_max: 0.2`` the pMFM convention; ``strength``; ``none``) and ``sc_scale`` rescale every SC
(:mod:`raybrain.connectome`); ``parametrisation.bounds: {G: auto}`` searches G where FIC's fixed
point is stable on every subject (:meth:`ExperimentConfig.stable_g_ranges`).
``subjects.split`` divides the subjects into train / validation / test (Zhang et al. 2024); runs
fit the training subjects. ``subjects.group: true`` fits one target, the group average of the
training subjects (mean FC, pooled FCD; :func:`raybrain.data.group_average`), named ``"group"``
(``"group/train"``, with ``"group/validation"`` and ``"group/test"`` beside it, under a split).

Budget
------
``budget.evaluations`` counts candidate evaluations per run (a candidate simulated ``repeats``
times with different noise counts once; under successive halving, a candidate counts once whatever
rung it reaches); ``budget.wall_s`` optionally stops a run earlier. A grid without
``points_per_dim`` takes the most points per parameter that fit the budget.

Multi-fidelity
--------------
``simulation.fidelities`` ascend (longer and/or finer). A population-mode optimizer with
``successive_halving: true`` (or ``{eta: 3}``; default η = 2) runs each generation as successive
halving over them (:mod:`raybrain.search.halving`); a trial-mode optimizer with ``scheduler:
asha`` (``hyperband``, ``median``) lets Tune stop trials at the rungs. Otherwise only the last
fidelity is used.

Spectral (M/EEG) fits
---------------------
``loss: spectral`` fits the power spectrum of an M/EEG-like model output (e.g. the LaNMM with
``model.options.output: eeg``, a model whose default hemodynamics is ``"none"``) sampled as
``simulation.meeg`` says (``fs`` Hz, Welch ``segment`` s, fit ``band`` Hz;
:class:`raybrain.spectral.MEEGSettings`). Its subjects are ``subjects.synthetic``, whose M/EEG
signal is simulated at ``fs`` with their true parameters. A composite
``loss: {spectral: 1.0, fc_corr: 0.5}`` adds FC on the BOLD of the model's BOLD variant (the same
candidates and noise; the synthetic subjects then carry both signals); it runs in population mode
without successive halving, and ``simulation.meeg.duration`` may keep the M/EEG run short while
the fidelities' durations set the BOLD's. Records carry the loss components and ``alpha_power``,
``gamma_power``, ``alpha_peak_hz``, ``gamma_peak_hz``.

Validation and test
-------------------
After the search, each run's ``validation.top`` best distinct training candidates (default 5;
0 skips this) are re-simulated with fresh noise at ``simulation.validation`` (default: the last
fidelity) on the validation targets with ``validation.repeats`` (default 3) fresh-noise repeats
each, and the winner (lowest mean validation loss) on the test targets (Zhang et al. 2024); the
winner is then profiled, one parameter at a time, to tell whether the data identify each
parameter (``validation.profile``). Under ``subjects.split`` the targets are the validation and test
subjects (their group averages with ``group: true``); without a split, validation is the run's
own subject again with fresh noise, and there is no test.

Modules
-------
:mod:`~raybrain.experiment.schema` (the sections, :class:`ExperimentConfig`, :func:`load_config`),
:mod:`~raybrain.experiment.checks` (the checks between sections),
:mod:`~raybrain.experiment.builder` (runs, targets, subjects, objectives built from a config),
:mod:`~raybrain.experiment.errors` (:class:`ConfigError`), :mod:`~raybrain.experiment.names`
(bundled subjects, optimizers, group targets, run-id characters).
"""
from __future__ import annotations

from .builder import RunSpec, objective_from_json
from .errors import ConfigError
from .names import DATASET_KEYS, FALLBACK_OPTIMIZERS, GROUP, SCHEDULERS, known_optimizers, sanitise
from .schema import (Bounds, BudgetConfig, CohortConfig, ExperimentConfig, Fidelity, HalvingConfig, MEEGConfig,
                     ModelConfig, OptimizerConfig, ParametrisationConfig, PositiveFloat, PositiveInt, ProfileConfig,
                     ResourcesConfig, SimulationConfig, SplitConfig, SubjectPath, SubjectsConfig, SyntheticSubject,
                     ValidationConfig, config_from_json, load_config)

__all__ = [
    "ConfigError", "load_config", "ExperimentConfig", "RunSpec", "SubjectPath", "SyntheticSubject", "CohortConfig",
    "SplitConfig", "SubjectsConfig", "ModelConfig", "ParametrisationConfig", "Fidelity",
    "SimulationConfig", "MEEGConfig", "OptimizerConfig", "HalvingConfig", "ValidationConfig", "ProfileConfig",
    "BudgetConfig",
    "ResourcesConfig", "known_optimizers",
    "sanitise", "config_from_json", "objective_from_json", "PositiveFloat", "PositiveInt", "Bounds",
    "FALLBACK_OPTIMIZERS", "SCHEDULERS", "DATASET_KEYS", "GROUP",
]
