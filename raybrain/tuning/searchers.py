"""Small wrappers around Tune's search algorithms for trial mode (imports Ray; load lazily).

* :class:`Numbered` stamps each suggested config with ``trial_index`` 0, 1, 2… in suggestion
  order and keeps the count across a resume (Tune saves wrapper state through
  ``get_state``/``set_state``). Tune names trials of a ``Searcher`` with random ids, so without it a
  trial's number — its record file and its noise streams — would not be reproducible.
* :class:`SeededNevergrad` seeds the nevergrad optimizer that ``NevergradSearch`` builds (Tune
  has no seed argument for it), and builds it for the search space's dimension.
* :class:`GPBayesOpt` is ``BayesOptSearch`` with the GP settings of the ``bayesopt`` family.
* :class:`AskTell` runs any ask/tell :class:`raybrain.search.Optimizer` family as a Tune searcher.
* :class:`SeededRandom` and :class:`GridPoints`: random and grid search as ``Searcher`` objects.
* :class:`PerRun` and :class:`PerRunScheduler` run every trial-mode run of an experiment side by
  side in one Tune experiment: each run keeps its own searcher, budget and scheduler (and both
  are saved together, since Tune does not save a scheduler).
"""
from __future__ import annotations

import math
import os
import pickle
import tempfile
import time
from typing import Callable, Dict, Optional

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.bayesopt import BayesOptSearch
from ray.tune.search.nevergrad import NevergradSearch

INDEX = "trial_index"


class Numbered(Searcher):
    """``searcher``'s suggestions, each with ``config[INDEX]`` = its suggestion number."""

    def __init__(self, searcher: Searcher):
        self.searcher = searcher
        self.count = 0
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: Dict, **spec) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> Optional[Dict]:
        out = self.searcher.suggest(trial_id)
        if out is None or out == Searcher.FINISHED:
            return out
        out = dict(out)
        out[INDEX] = self.count
        self.count += 1
        return out

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> Dict:
        return {"count": self.count}

    def set_state(self, state: Dict) -> None:
        self.count = int(state.get("count", self.count))

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class SeededNevergrad(NevergradSearch):
    """``NevergradSearch`` whose optimizer draws from ``numpy.random.RandomState(seed)``. With
    ``configure`` its optimizer is ``configure(nevergrad, dim=...)`` (a ConfiguredOptimizer) for the
    dimension of the search space it is given, in place of ``optimizer``."""

    def __init__(self, *args, seed: int = 0, configure: Optional[Callable] = None, **kwargs):
        self._seed = int(seed)
        self._configure = configure
        if configure is not None and not args and "optimizer" not in kwargs:
            import nevergrad as ng

            kwargs["optimizer"] = ng.optimizers.CMA  # a stand-in: replaced in _setup_nevergrad
        super().__init__(*args, **kwargs)

    def _setup_nevergrad(self):
        if self._configure is not None and self._space is not None:
            import nevergrad as ng

            self._opt_factory = self._configure(ng, dim=self._space.dimension)
        super()._setup_nevergrad()
        if self._nevergrad_opt is not None:
            self._nevergrad_opt.parametrization.random_state = np.random.RandomState(self._seed)


# -- trial-mode runs side by side in one Tuner -------------------------------------------------
RUN = "run_id"


def _chain(searcher):
    """``searcher`` and the searchers it wraps (``.searcher``), outermost first."""
    out = [searcher]
    while isinstance(getattr(out[-1], "searcher", None), Searcher):
        out.append(out[-1].searcher)
    return out


class PerRun(Searcher):
    """Several trial-mode runs in one Tune experiment, each with its own searcher and budget.

    ``runs`` maps a run id to its (already configured) searcher, typically
    ``ConcurrencyLimiter(Numbered(alg))``; ``budgets`` to its number of trials; ``wall_s`` (optional)
    is each run's wall-time budget, counted from its first suggestion. :meth:`suggest` asks the runs
    in turn (round robin, so runs progress side by side within the cluster's resources) and stamps
    ``config[RUN]``; results go back to the run that suggested the trial. A run's sequence of
    suggestions and results is its own, so it is the same whichever other runs share the
    experiment. Saved as one file: each run's searcher chain (wrapper states + the base searcher's
    own ``save``)."""

    def __init__(self, runs: Dict[str, Searcher], budgets: Dict[str, int], wall_s: Optional[float] = None,
                 metric: Optional[str] = None, mode: Optional[str] = None):
        super().__init__(metric=metric, mode=mode)
        self.runs = dict(runs)
        self.budgets = {r: int(budgets[r]) for r in self.runs}
        self.wall_s = wall_s
        self.asked = {r: 0 for r in self.runs}      # suggestions made per run
        self.started: Dict[str, float] = {}         # first suggestion time per run (wall budget)
        self.finished = set()
        self.owner: Dict[str, str] = {}             # Tune trial id -> run id
        self.turn = 0
        self.scheduler: Optional["PerRunScheduler"] = None  # saved and restored with the searchers

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True  # each run's searcher was given its own space when it was built

    def _exhausted(self, run: str) -> bool:
        if run in self.finished or self.asked[run] >= self.budgets[run]:
            return True
        return self.wall_s is not None and run in self.started and time.time() - self.started[run] > self.wall_s

    def suggest(self, trial_id: str):
        order = list(self.runs)
        for k in range(len(order)):
            run = order[(self.turn + k) % len(order)]
            if self._exhausted(run):
                continue
            out = self.runs[run].suggest(trial_id)
            if out == Searcher.FINISHED:
                self.finished.add(run)
                continue
            if out is None:
                continue
            self.started.setdefault(run, time.time())
            self.asked[run] += 1
            self.owner[trial_id] = run
            self.turn = (self.turn + k + 1) % len(order)
            return {**out, RUN: run}
        return Searcher.FINISHED if all(self._exhausted(r) for r in order) else None

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        run = self.owner.get(trial_id)
        if run is not None:
            self.runs[run].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        run = self.owner.pop(trial_id, None)
        if run is not None:
            self.runs[run].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        saved = {}
        with tempfile.TemporaryDirectory() as d:
            for run, s in self.runs.items():
                chain = _chain(s)
                tmp = os.path.join(d, "base.pkl")
                chain[-1].save(tmp)
                with open(tmp, "rb") as f:
                    saved[run] = {"wrappers": [w.get_state() for w in chain[:-1]], "base": f.read()}
        own = {k: getattr(self, k) for k in ("asked", "started", "finished", "owner", "turn")}
        sched = self.scheduler.get_state() if self.scheduler is not None else None
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"runs": saved, "own": own, "scheduler": sched}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            data = pickle.load(f)
        with tempfile.TemporaryDirectory() as d:
            for run, st in data["runs"].items():
                chain = _chain(self.runs[run])
                for w, state in zip(chain[:-1], st["wrappers"]):
                    w.set_state(state)
                tmp = os.path.join(d, "base.pkl")
                with open(tmp, "wb") as f:
                    f.write(st["base"])
                chain[-1].restore(tmp)
        for k, v in data["own"].items():
            setattr(self, k, v)
        if self.scheduler is not None and data.get("scheduler") is not None:
            self.scheduler.set_state(data["scheduler"])


class _Pickled(Searcher):
    """A searcher saved and restored whole (its attributes pickled)."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class _GivenSpace(_Pickled):
    """A searcher built with its own space: Tune's is not needed."""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        pass  # it does not learn from results


class SeededRandom(_GivenSpace):
    """Uniform random search over ``space`` (``{name: (low, high)}``) from ``seed``."""

    def __init__(self, space: Dict[str, tuple], seed: int = 0, metric=None, mode=None):
        super().__init__(metric=metric, mode=mode)
        self.space = {k: (float(lo), float(hi)) for k, (lo, hi) in space.items()}
        self.rng = np.random.default_rng(int(seed))

    def suggest(self, trial_id: str):
        return {k: float(self.rng.uniform(lo, hi)) for k, (lo, hi) in self.space.items()}


class GridPoints(_GivenSpace):
    """Every point of a grid (``{name: [values]}``, last name fastest), in order, then FINISHED."""

    def __init__(self, axes: Dict[str, list], metric=None, mode=None):
        super().__init__(metric=metric, mode=mode)
        import itertools

        names = list(axes)
        self.points = [dict(zip(names, map(float, p))) for p in itertools.product(*(axes[n] for n in names))]
        self.next = 0

    def suggest(self, trial_id: str):
        if self.next >= len(self.points):
            return Searcher.FINISHED
        self.next += 1
        return dict(self.points[self.next - 1])


class PerRunScheduler(FIFOScheduler):
    """A Tune scheduler that gives each run (``trial.config[RUN]``) its own scheduler, built by
    ``makers[run]()``: ASHA's rungs, HyperBand's brackets and the median rule compare a trial with
    the trials of its own run only, never with another subject's or seed's."""

    def __init__(self, makers: Dict[str, Callable[[], TrialScheduler]]):
        super().__init__()
        self.makers, self.subs, self._mode = dict(makers), {}, None
        self.known: set = set()  # trials already added (a restored trial keeps its bracket)

    def get_state(self) -> bytes:
        """The runs' schedulers (rungs, brackets, recorded results): Tune does not save a
        scheduler with the experiment, so :class:`PerRun` saves it with the searchers, and a
        resumed run stops the same trials as an uninterrupted one."""
        from ray import cloudpickle  # the median rule holds a lambda

        return cloudpickle.dumps({"subs": self.subs, "known": self.known})

    def set_state(self, data: bytes) -> None:
        from ray import cloudpickle

        state = cloudpickle.loads(data)
        self.subs, self.known = state["subs"], state["known"]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return all([s.set_search_properties(metric, mode, **spec) for s in self.subs.values()])

    def _sub(self, trial) -> TrialScheduler:
        run = trial.config.get(RUN)
        if run not in self.subs:
            s = self.makers[run]()
            s.set_search_properties(self._metric, self._mode)
            self.subs[run] = s
        return self.subs[run]

    def on_trial_add(self, tc, trial):
        if trial.trial_id not in self.known:
            self.known.add(trial.trial_id)
            self._sub(trial).on_trial_add(tc, trial)

    def on_trial_error(self, tc, trial):
        self._sub(trial).on_trial_error(tc, trial)

    def on_trial_result(self, tc, trial, result):
        return self._sub(trial).on_trial_result(tc, trial, result)

    def on_trial_complete(self, tc, trial, result):
        self._sub(trial).on_trial_complete(tc, trial, result)

    def on_trial_remove(self, tc, trial):
        self._sub(trial).on_trial_remove(tc, trial)

    def debug_string(self) -> str:
        return f"per-run schedulers ({len(self.subs)} runs)"


# -- families' own trial-mode searchers --------------------------------------------------------
class GPBayesOpt(BayesOptSearch):
    """``BayesOptSearch`` whose Gaussian process has noise term ``alpha`` and ``gp_restarts``
    restarts of its kernel fit (settings of the ``bayesopt`` family)."""

    def __init__(self, *args, alpha: float = 1e-6, gp_restarts: int = 5, **kwargs):
        self._gp_params = {"alpha": float(alpha), "n_restarts_optimizer": int(gp_restarts)}
        super().__init__(*args, **kwargs)

    def _setup_optimizer(self):
        super()._setup_optimizer()
        self.optimizer.set_gp_params(**self._gp_params)


class AskTell(_Pickled):
    """An ask/tell family as a Tune searcher: it asks ``family`` (a
    :class:`raybrain.search.Optimizer` subclass, built with ``seed``, ``settings`` and
    ``family.trial_population(P, max_concurrent)`` candidates per generation over the box of the
    uniform search space it is given) for a generation, hands the
    candidates out one per trial in ask order, tells each loss when its trial completes, and asks
    the next generation once the last one is told (suggesting nothing meanwhile); FINISHED once the
    family is ``done``. A trial that errs or reports no finite loss is told the worst loss told so
    far (1e12 before any)."""

    def __init__(self, family, seed: int = 0, max_concurrent: int = 1, settings: Optional[Dict] = None,
                 metric: Optional[str] = None, mode: Optional[str] = None):
        super().__init__(metric=metric, mode=mode)
        self.family, self.seed, self.max_concurrent = family, int(seed), int(max_concurrent)
        self.settings = dict(settings or {})
        self.optimizer = None
        self.names: list = []
        self.queue: list = []    # rows of the current generation not suggested yet
        self.live: Dict = {}     # trial id -> its row
        self.worst = -math.inf

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: Dict, **spec) -> bool:
        if self.optimizer is not None:
            return False
        from ray.tune.search.sample import Float, Uniform
        from ray.tune.search.variant_generator import parse_spec_vars

        _, domains, grids = parse_spec_vars(config)
        names, bounds = [], []
        for path, dom in domains:
            if len(path) != 1 or not isinstance(dom, Float) or not isinstance(dom.get_sampler(), Uniform):
                raise ValueError(f"{self.family.family_name()}: trial mode searches uniform float parameters, got "
                                 f"{'/'.join(map(str, path))} = {dom!r}")
            names.append(path[0])
            bounds.append((dom.lower, dom.upper))
        if grids or not names:
            raise ValueError(f"{self.family.family_name()}: trial mode needs a search space of uniform parameters")
        self._metric, self._mode = metric or self._metric, mode or self._mode
        self.names = names
        self.optimizer = self.family(np.array(bounds, dtype=np.float64), seed=self.seed,
                                     population=self.family.trial_population(len(names), self.max_concurrent),
                                     **self.settings)
        return True

    def suggest(self, trial_id: str) -> Optional[Dict]:
        opt = self.optimizer
        if not self.queue:
            if self.live or opt.n_told < opt.n_asked:
                return None  # the generation is still out
            if opt.done:
                return Searcher.FINISHED
            self.queue = list(opt.ask())
        row = self.queue.pop(0)
        self.live[trial_id] = row
        return {n: float(x) for n, x in zip(self.names, row)}

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        row = self.live.pop(trial_id, None)
        if row is None:
            return
        y = None if error or not result else result.get(self._metric)
        if y is not None and math.isfinite(float(y)):
            y = -float(y) if self._mode == "max" else float(y)
            self.worst = max(self.worst, y)
        else:
            y = self.worst if math.isfinite(self.worst) else 1e12
        self.optimizer.tell(row[None], [y])

