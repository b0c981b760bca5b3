r"""Optuna samplers driven by ask–tell: TPE and CMA-ES.

A study (in-memory storage, ``direction="minimize"``) holds one trial per candidate; each
parameter is a ``FloatDistribution(0, 1)`` over the unit box. :meth:`ask` opens ``population``
trials with ``study.ask`` and :meth:`tell` closes them with ``study.tell``. Requires
``pip install optuna`` (tested with 5.0.0) and, for ``"optuna-cmaes"``, ``pip install cmaes``.

* ``"tpe"`` — tree-structured Parzen estimator (Bergstra et al. 2011, "Algorithms for
  hyper-parameter optimization", NeurIPS 24). Observations are split at the :math:`\gamma`-quantile
  of the losses into good and bad sets; Parzen densities :math:`l(x)` (good) and :math:`g(x)`
  (bad) are fitted and the candidate maximising :math:`l(x)/g(x)` — equivalent to expected
  improvement — among ``n_ei_candidates`` draws from :math:`l` is proposed. The first
  ``n_startup_trials`` are uniform. With ``constant_liar`` (default on) the still-running trials
  of a generation count as bad observations so one generation does not collapse onto one point.
  ``multivariate`` (default on) models the parameters jointly (Falkner et al. 2018). The settings
  are ``optuna.samplers.TPESampler`` keywords (see :attr:`OptunaTPE.defaults`; None leaves
  optuna's default).
* ``"optuna-cmaes"`` — CMA-ES (Hansen 2016, arXiv:1604.00772) from the ``cmaes`` package through
  ``optuna.samplers.CmaEsSampler`` with ``popsize = population``; it starts at the centre of the
  box with step size ``sigma0`` in units of each parameter's range (default 1/6, optuna's own
  default; optuna 4.9 deprecated passing ``sigma0``, so it is passed only when set). Optuna infers
  the search space from completed trials, so the *first generation is uniform random* and CMA-ES
  starts from the second. Settings ``sigma0``, ``use_separable_cma``, ``lr_adapt``.

Trial mode: Tune's ``OptunaSearch`` with the same sampler (same settings, same defaults: TPE is
multivariate with the constant liar in both modes; CMA-ES's ``popsize`` is the number of trials in
flight, at least its default population), over Tune's ``FloatDistribution`` of each parameter,
which optuna's CMA-ES also maps to the unit box, so ``sigma0`` means the same in both modes.
"""
from __future__ import annotations

import warnings

import numpy as np

from .base import Optimizer, require

__all__ = ["OptunaOptimizer", "OptunaTPE", "OptunaCMAES"]


class OptunaOptimizer(Optimizer):
    """Common ask–tell plumbing for an optuna sampler on the unit box."""

    @classmethod
    def sampler(cls, optuna, settings, seed: int, population: int):  # pragma: no cover - abstract
        """The optuna sampler for ``settings`` (merged with the defaults), seeded with ``seed``,
        ``population`` candidates per generation."""
        raise NotImplementedError

    @classmethod
    def _built_sampler(cls, settings, seed: int, population: int):
        optuna = require("optuna", "optuna")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls.sampler(optuna, settings, seed, population)

    @classmethod
    def trial_searcher(cls, names, bounds, seed, settings, max_concurrent):
        population = None if names is None else cls.trial_population(len(names), max_concurrent)
        sampler = cls._built_sampler(settings, seed, population)
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=sampler)

    def _setup(self) -> None:
        optuna = require("optuna", "optuna")
        self._keys = [f"x{j:03d}" for j in range(self.dim)]
        self._dists = {k: optuna.distributions.FloatDistribution(0.0, 1.0) for k in self._keys}
        sampler = self._built_sampler(self.settings, self.seed, self.population)
        self._study = optuna.create_study(direction="minimize", sampler=sampler)
        self._trials: list = []

    def _ask_unit(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's experimental / independent-sampling notices
            self._trials = [self._study.ask(self._dists) for _ in range(self.population)]
        return np.array([[t.params[k] for k in self._keys] for t in self._trials], dtype=np.float64)

    def _tell(self, index, losses) -> None:
        for i, y in zip(index, losses):
            self._study.tell(self._trials[i], float(y))


class OptunaTPE(OptunaOptimizer):
    """TPE (Bergstra et al. 2011) via ``optuna.samplers.TPESampler(seed=seed, **settings)``."""

    name = "tpe"
    defaults = {"n_startup_trials": 10, "n_ei_candidates": 24, "multivariate": True,
                "constant_liar": True, "consider_endpoints": None, "prior_weight": None,
                "consider_magic_clip": None, "consider_prior": None, "group": False}

    @classmethod
    def sampler(cls, optuna, settings, seed, population):
        s = {k: v for k, v in settings.items() if v is not None}
        return optuna.samplers.TPESampler(seed=seed, **s)


class OptunaCMAES(OptunaOptimizer):
    """CMA-ES (Hansen 2016) via ``optuna.samplers.CmaEsSampler`` and the ``cmaes`` package."""

    name = "optuna-cmaes"
    defaults = {"sigma0": None, "use_separable_cma": False, "lr_adapt": False}

    @classmethod
    def default_population(cls, dim: int) -> int:
        return 4 + int(3 * np.log(dim))  # Hansen 2016, table 1

    @classmethod
    def sampler(cls, optuna, settings, seed, population):
        require("cmaes", "cmaes")
        s = dict(settings)
        sigma0 = s.pop("sigma0")
        if sigma0 is not None:
            if isinstance(sigma0, bool) or not isinstance(sigma0, (int, float, np.number)) or not sigma0 > 0:
                raise ValueError(f"optuna-cmaes: setting 'sigma0' must be a positive number, got {sigma0!r}")
            s["sigma0"] = float(sigma0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # sigma0 deprecated in optuna 4.9
            return optuna.samplers.CmaEsSampler(seed=seed, popsize=population,
                                                n_startup_trials=0, warn_independent_sampling=False,
                                                use_separable_cma=bool(s.pop("use_separable_cma")),
                                                lr_adapt=bool(s.pop("lr_adapt")), **s)
