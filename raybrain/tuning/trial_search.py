"""Trial mode's search: each run's seeded, numbered Tune searcher (:func:`tune_searcher`) and its
scheduler over simulated seconds (:func:`tune_scheduler`), and every trial-mode run of an
experiment side by side in one Tune experiment (:func:`_trial_runs`)."""
from __future__ import annotations

import numpy as np

from ..experiment import objective_from_json
from .trainables import METRIC


def _search_space(par) -> dict:
    from ray import tune

    return {n: tune.uniform(float(lo), float(hi)) for n, (lo, hi) in zip(par.names, par.bounds)}


def tune_searcher(name: str, par, seed: int, settings: dict, max_concurrent: int, num_samples: int | None = None):
    """The trial-mode searcher of optimizer family ``name`` (a registry name or ``module:Class``),
    seeded with the run seed: the family's :meth:`~raybrain.search.Optimizer.trial_searcher` with
    ``settings`` (checked for trial mode, merged with the family's defaults), wrapped to number its
    trials (:class:`.searchers.Numbered`) and limited to ``max_concurrent`` trials in flight.
    ``par`` (names, bounds) may be None where the searcher learns the space from Tune alone."""
    from ray.tune.search import ConcurrencyLimiter

    from ..search import family
    from .searchers import Numbered

    fam = family(name)
    names, bounds = (None, None) if par is None else (list(par.names), np.asarray(par.bounds, dtype=np.float64))
    alg = fam.trial_searcher(names, bounds, int(seed), fam.check_settings(settings, "trial"), max_concurrent)
    return ConcurrencyLimiter(Numbered(alg), max_concurrent=max_concurrent)


def tune_scheduler(name: str, fids):
    """Tune's scheduler ``name`` over simulated seconds, with the fidelities' durations as rungs.

    ``hyperband`` is asynchronous HyperBand (ASHA run over ``len(fids)`` brackets, Li et al. 2020):
    Tune's synchronous ``HyperBandScheduler`` pauses trials until their bracket is complete and,
    with a concurrency-limited searcher and trials that end by themselves at ``max_t``, can leave a
    trial paused forever (``Tuner.fit`` never returns; seen with Ray 2.60 + BayesOptSearch)."""
    from ray.tune import schedulers as S

    kw = dict(time_attr="sim_seconds")  # metric and mode come from the TuneConfig
    rf = max(2, round(fids[-1].duration / fids[0].duration) ** (1 / max(1, len(fids) - 1)))
    if name == "fifo":
        return S.FIFOScheduler()
    if name == "asha":
        return S.ASHAScheduler(max_t=fids[-1].duration, grace_period=fids[0].duration, reduction_factor=rf, **kw)
    if name == "hyperband":
        return S.AsyncHyperBandScheduler(max_t=fids[-1].duration, grace_period=fids[0].duration,
                                         reduction_factor=rf, brackets=len(fids), **kw)
    if name == "median":
        return S.MedianStoppingRule(grace_period=fids[0].duration, **kw)
    raise ValueError(f"unknown scheduler {name!r}")


def _trial_runs(cfg, text: str, specs):
    """The searcher, scheduler and trials in flight of the trial-mode runs ``specs``: one seeded,
    numbered searcher per run (``population`` trials of it in flight), one scheduler per run."""
    from functools import partial

    from .searchers import PerRun, PerRunScheduler

    fids = cfg.simulation.fidelities
    runs, budgets, makers, conc = {}, {}, {}, 0
    for s in specs:
        par = objective_from_json(text, s.subject, len(fids) - 1).parametrisation
        o = s.optimizer
        c = max(1, int(o.population))  # trial mode: candidates in flight at once
        searcher = tune_searcher(o.name, par, s.seed, cfg.optimizer_settings(o, len(par.names)), c)
        searcher.set_search_properties(METRIC, "min", _search_space(par))
        # a grid smaller than the budget ends its run itself (its searcher says FINISHED)
        runs[s.run_id], budgets[s.run_id] = searcher, cfg.budget.evaluations
        makers[s.run_id] = partial(tune_scheduler, o.scheduler, fids)
        conc += c
    # trials pending at once: enough to fill the cluster twice over, not one per run of a cohort
    import ray

    slots = max(1, int(ray.cluster_resources().get("CPU", 1) / max(cfg.resources.cpu, 1e-9)))
    searcher, scheduler = PerRun(runs, budgets, wall_s=cfg.budget.wall_s), PerRunScheduler(makers)
    searcher.scheduler = scheduler  # Tune saves no scheduler: the searcher saves it with its own state
    return searcher, scheduler, max(1, min(conc, 2 * slots))
