r"""Bayesian optimisation with a Gaussian-process surrogate (``bayesian-optimization`` < 2).

Bayesian optimisation (Snoek, Larochelle & Adams 2012, "Practical Bayesian optimization of machine
learning algorithms", NeurIPS 25) fits a Gaussian process with a Matérn-5/2 kernel to the observed
losses and proposes the maximiser of an acquisition function: upper confidence bound
:math:`\mu(x) + \kappa \sigma(x)` on the negated loss (``kind="ucb"``, default :math:`\kappa` =
2.576), expected improvement (``"ei"``) or probability of improvement (``"poi"``, both with
exploration margin ``xi``). The GP (``bayes_opt.BayesianOptimization``'s regressor, targets
normalised, kernel hyper-parameters refitted at each proposal) and the acquisition maximisation
(``n_warmup`` uniform draws, then L-BFGS-B from ``n_iter`` random starts: ``bayes_opt.util.acq_max``
with a ``bayes_opt.UtilityFunction``) are the library's; the only departure from
``BayesianOptimization.suggest`` is that ``n_warmup``/``n_iter`` are settings (the 1.x API; 2.x
removed ``UtilityFunction``). Requires
``pip install "bayesian-optimization<2"`` (tested with 1.4.0).

Batches: a generation of ``population`` points is built by the *constant liar* heuristic
(Ginsbourger, Le Riche & Carraro 2010, "Kriging is well-suited to parallelize optimization"):
after each proposal the point is registered with the worst loss observed so far as a fake
observation, so the next proposal of the same generation moves elsewhere; the lies are dropped when
the real losses are told. Proposals are uniform until ``init_points`` real observations exist (and
for the whole first generation). Searches the unit box; ``alpha`` is the GP's noise term on the
normalised targets (raise it for noisy losses).

Trial mode: Tune's ``BayesOptSearch`` seeded with the run seed, with the same acquisition
(``kind``, ``kappa``, ``xi``) and GP (``alpha``, ``gp_restarts``) settings and ``init_points`` random
trials first; it proposes one trial at a time in parameter units. ``n_warmup`` and ``n_iter`` (the
acquisition maximiser's effort) apply to population mode only: Tune's searcher keeps bayes_opt's
values, the same as their defaults here.
"""
from __future__ import annotations

import warnings

import numpy as np

from .base import Optimizer, require

__all__ = ["BayesOpt"]


class BayesOpt(Optimizer):
    """GP Bayesian optimisation. Settings: ``kind`` ("ucb", "ei", "poi"; default "ucb"), ``kappa``
    (2.576), ``xi`` (0.0), ``init_points`` (5), ``alpha`` (1e-6), ``n_warmup`` (10000),
    ``n_iter`` (10), ``gp_restarts`` (restarts of the GP kernel fit, 5) — bayes_opt's defaults."""

    name = "bayesopt"
    defaults = {"kind": "ucb", "kappa": 2.576, "xi": 0.0, "init_points": 5, "alpha": 1e-6,
                "n_warmup": 10000, "n_iter": 10, "gp_restarts": 5}
    population_only = frozenset({"n_warmup", "n_iter"})  # Tune's searcher: bayes_opt's 10000 and 10

    @classmethod
    def default_population(cls, dim: int) -> int:
        return 4

    @classmethod
    def trial_searcher(cls, names, bounds, seed, settings, max_concurrent):
        cls._check(settings)
        from ..tuning.searchers import GPBayesOpt

        s = settings
        return GPBayesOpt(utility_kwargs={"kind": s["kind"], "kappa": float(s["kappa"]), "xi": float(s["xi"])},
                          random_state=int(seed), random_search_steps=int(s["init_points"]),
                          alpha=float(s["alpha"]), gp_restarts=int(s["gp_restarts"]))

    def _setup(self) -> None:
        bo = self._check(self.settings)
        s = self.settings
        self._keys = [f"x{j:03d}" for j in range(self.dim)]   # bayes_opt sorts keys: zero-padded
        self._utility = bo.UtilityFunction(kind=s["kind"], kappa=float(s["kappa"]), xi=float(s["xi"]))
        self._rng = np.random.default_rng(self.seed)
        self._X = np.empty((0, self.dim))
        self._y = np.empty(0)                 # losses (the GP sees -loss: bayes_opt maximises)
        self._asked = np.empty((0, self.dim))

    @staticmethod
    def _check(s):
        """The ``bayes_opt`` module, after checking its version and the values of settings ``s``."""
        bo = require("bayes_opt", "bayesian-optimization<2")
        if not hasattr(bo, "UtilityFunction"):
            raise ImportError('bayesopt needs bayesian-optimization 1.x (2.x has no UtilityFunction): '
                              'pip install "bayesian-optimization<2"')
        if s["kind"] not in ("ucb", "ei", "poi"):
            raise ValueError(f"bayesopt: setting 'kind' must be 'ucb', 'ei' or 'poi', got {s['kind']!r}")
        for key in ("kappa", "xi", "alpha"):
            v = s[key]
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or v < 0:
                raise ValueError(f"bayesopt: setting {key!r} must be a non-negative number, got {v!r}")
        for key, low in (("init_points", 1), ("n_warmup", 1), ("n_iter", 1), ("gp_restarts", 0)):
            v = s[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"bayesopt: setting {key!r} must be an integer >= {low}, got {v!r}")
        return bo

    def _ask_unit(self) -> np.ndarray:
        from bayes_opt import BayesianOptimization

        n_obs = len(self._y)
        out = np.empty((self.population, self.dim))
        bo = None
        for k in range(self.population):
            if n_obs == 0 or n_obs + k < self.settings["init_points"]:
                out[k] = self._rng.random(self.dim)
                continue
            if bo is None:
                bo = BayesianOptimization(f=None, pbounds={key: (0.0, 1.0) for key in self._keys},
                                          random_state=np.random.RandomState(self._rng.integers(2**31 - 1)),
                                          verbose=0, allow_duplicate_points=True)
                bo.set_gp_params(alpha=float(self.settings["alpha"]),
                                 n_restarts_optimizer=int(self.settings["gp_restarts"]))
                for x, y in zip(self._X, self._y):
                    bo.register(dict(zip(self._keys, x)), -float(y))
                lie = -float(self._y.max())
            out[k] = np.clip(self._suggest(bo), 0.0, 1.0)
            bo.register(dict(zip(self._keys, out[k])), lie)
        self._asked = out
        return out

    def _suggest(self, bo) -> np.ndarray:
        """``BayesianOptimization.suggest`` (bayes_opt 1.4) with configurable acq_max effort."""
        from bayes_opt.util import acq_max

        space = bo._space
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # sklearn GP convergence warnings, as bayes_opt does
            bo._gp.fit(space.params, space.target)
            return acq_max(ac=self._utility.utility, gp=bo._gp, y_max=space.target.max(),
                           bounds=space.bounds, random_state=bo._random_state,
                           n_warmup=int(self.settings["n_warmup"]), n_iter=int(self.settings["n_iter"]))

    def _tell(self, index, losses) -> None:
        self._X = np.vstack([self._X, self._asked[index]])
        self._y = np.concatenate([self._y, losses])
