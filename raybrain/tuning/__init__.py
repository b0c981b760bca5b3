"""Running an experiment on Ray Tune, in its two modes; both write the same records.

* **population** — one Tune trial per (subject, optimizer, seed) run. The run asks its optimizer
  for a whole generation, evaluates it in one batched simulator call, tells the losses back,
  writes the generation's records and checkpoints the optimizer. Tune runs the grid of runs in
  parallel across the cluster. A restored run continues from its last checkpoint and rewrites
  (never duplicates) a generation it may have written before it was stopped.
* **trial** — one Tune trial per candidate, proposed by one of Tune's own search algorithms
  (random/grid, HyperOpt TPE, Optuna TPE/CMA-ES, Nevergrad CMA/DE/PSO, BayesOpt) under one of
  Tune's schedulers (FIFO, ASHA, HyperBand, median stopping). A trial simulates in chunks up to
  each fidelity's duration (simulated seconds are the resource), reports its loss after each and
  checkpoints its simulator state, so ASHA stops poor candidates early and a stopped trial
  resumes instead of restarting. Trials are numbered in suggestion order (``trial_index``), which
  names their record files and their noise streams, so a run is reproducible from its seed. Every
  trial-mode run of an experiment shares one Tune experiment, side by side; each keeps its own
  searcher, budget and scheduler (:func:`.trial_search._trial_runs`).

After the search, a third stage (**holdout**, one Tune trial per run) re-simulates each run's best
training candidates with fresh noise on the validation targets and the winner on the test targets
(:meth:`raybrain.experiment.ExperimentConfig.holdout_targets`), then profiles the winner's
validated loss one parameter at a time (:func:`.trainables.holdout_trainable`).

Ray 2.60: report with ``ray.tune.report(metrics)``; configs from ``ray.tune``. Checkpoints are
raybrain's own files (:func:`.trainables.state_path`), not Tune's.

Modules: :mod:`.driver` (:func:`run_experiment`, Ray, interrupts), :mod:`.trainables` (the three
stages' trainables, their checkpoints and noise seeds), :mod:`.trial_search` (trial mode's
searchers and schedulers), :mod:`.searchers` (Tune ``Searcher`` and scheduler wrappers; imports
Ray, so it is loaded lazily), :mod:`.records` (the schema, truth and covariates files).
"""
from .driver import Interrupted, run_experiment
from .records import results_schema
from .trainables import (METRIC, holdout_seed, holdout_trainable, noise_seed, population_trainable, profile_points,
                         state_path, trial_trainable)
from .trial_search import tune_scheduler, tune_searcher

__all__ = ["METRIC", "Interrupted", "holdout_seed", "holdout_trainable", "noise_seed", "population_trainable",
           "profile_points", "results_schema", "run_experiment", "state_path", "trial_trainable", "tune_scheduler",
           "tune_searcher"]
