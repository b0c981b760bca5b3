r"""Hyperopt's tree-structured Parzen estimator, driven ask–tell through its Trials/Domain API.

TPE (Bergstra et al. 2011, "Algorithms for hyper-parameter optimization", NeurIPS 24) models
:math:`p(x \mid y)` with two Parzen (kernel density) estimators: :math:`l(x)` over the
observations whose loss is below the :math:`\gamma`-quantile and :math:`g(x)` over the rest, and
proposes the best of ``n_EI_candidates`` draws from :math:`l` by :math:`l(x)/g(x)`, which orders
candidates as expected improvement does. The first ``n_startup_jobs`` proposals are uniform.

Each parameter is ``hp.uniform`` over the unit box. One :meth:`ask` calls
``hyperopt.tpe.suggest`` once per candidate (this is what ``fmin`` does, one trial id at a time,
with a seed drawn from a seeded ``numpy.random.Generator``) and inserts each new trial document
into a ``hyperopt.Trials``; :meth:`tell` marks the documents done with ``{"loss", "status": "ok"}``.
While a generation is outstanding its documents count as infinitely bad observations for the
later proposals of the same generation (hyperopt's own treatment of running jobs), which spreads a
generation out. Requires ``pip install hyperopt`` (tested with 0.3.0).

Trial mode: Tune's ``HyperOptSearch`` seeded with the run seed, calling the same
``tpe.suggest`` with the same four settings (``n_startup_jobs`` is its ``n_initial_points``).
"""
from __future__ import annotations

import functools

import numpy as np

from .base import Optimizer, require

__all__ = ["HyperoptTPE"]


def _never_called(params):  # hyperopt.Domain needs an objective; ask-tell never evaluates it
    raise RuntimeError("raybrain evaluates candidates itself")


class HyperoptTPE(Optimizer):
    """Hyperopt TPE. Settings: ``n_startup_jobs`` (20), ``n_EI_candidates`` (24), ``gamma`` (0.25),
    ``prior_weight`` (1.0) — hyperopt's defaults."""

    name = "hyperopt-tpe"
    defaults = {"n_startup_jobs": 20, "n_EI_candidates": 24, "gamma": 0.25, "prior_weight": 1.0}

    @classmethod
    def trial_searcher(cls, names, bounds, seed, settings, max_concurrent):
        require("hyperopt", "hyperopt")
        from ray.tune.search.hyperopt import HyperOptSearch

        s = settings
        alg = HyperOptSearch(n_initial_points=int(s["n_startup_jobs"]), gamma=s["gamma"], random_state_seed=seed)
        alg.algo = functools.partial(alg.algo, n_EI_candidates=int(s["n_EI_candidates"]),
                                     prior_weight=s["prior_weight"])
        return alg

    def _setup(self) -> None:
        hyperopt = require("hyperopt", "hyperopt")
        self._keys = [f"x{j:03d}" for j in range(self.dim)]
        space = {k: hyperopt.hp.uniform(k, 0.0, 1.0) for k in self._keys}
        self._domain = hyperopt.Domain(_never_called, space)
        self._trials = hyperopt.Trials()
        self._rng = np.random.default_rng(self.seed)
        self._docs: list = []

    def _ask_unit(self) -> np.ndarray:
        from hyperopt import tpe

        s = self.settings
        rows = []
        self._docs = []
        for _ in range(self.population):
            tid = self._trials.new_trial_ids(1)
            self._trials.refresh()
            new = tpe.suggest(tid, self._domain, self._trials, int(self._rng.integers(2**31 - 1)),
                              prior_weight=s["prior_weight"], n_startup_jobs=s["n_startup_jobs"],
                              n_EI_candidates=s["n_EI_candidates"], gamma=s["gamma"], verbose=False)
            self._trials.insert_trial_docs(new)
            self._trials.refresh()
            doc = self._trials._dynamic_trials[-1]     # the stored copy (insert SONifies the doc)
            if doc["tid"] != tid[0]:  # pragma: no cover - hyperopt internals changed
                raise RuntimeError("hyperopt-tpe: unexpected Trials layout")
            self._docs.append(doc)
            rows.append([doc["misc"]["vals"][k][0] for k in self._keys])
        return np.array(rows, dtype=np.float64)

    def _tell(self, index, losses) -> None:
        from hyperopt import JOB_STATE_DONE, STATUS_OK

        for i, y in zip(index, losses):
            doc = self._docs[i]
            doc["state"] = JOB_STATE_DONE
            doc["result"] = {"loss": float(y), "status": STATUS_OK}
        self._trials.refresh()
