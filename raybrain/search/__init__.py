"""Search: ask–tell optimizers over a box of named parameters, one family per module.

``OPTIMIZERS`` maps a registry name (the ``optimizers[].name`` of an experiment config) to its
class; :func:`get_optimizer` builds one::

    from raybrain.search import get_optimizer
    opt = get_optimizer("cmaes", bounds, seed=0, population=100, parents=10, sigma0=0.25)
    theta = opt.ask(); opt.tell(theta, losses)

===================  ==============================================  ===========================
name                 algorithm                                       backend (pip package)
===================  ==============================================  ===========================
``random``           uniform random search (Bergstra & Bengio 2012)  numpy
``grid``             Cartesian grid                                  numpy
``cmaes``            CMA-ES (Hansen 2016)                            nevergrad
``de``               differential evolution (Storn & Price 1997)     nevergrad
``pso``              particle swarm (Kennedy & Eberhart 1995)        nevergrad
``tpe``              TPE (Bergstra et al. 2011)                      optuna
``optuna-cmaes``     CMA-ES (Hansen 2016)                            optuna + cmaes
``hyperopt-tpe``     TPE (Bergstra et al. 2011)                      hyperopt
``bayesopt``         GP Bayesian optimisation (Snoek et al. 2012)    bayesian-optimization<2
``surrogate-cmaes``  CMA-ES on a learned cost surrogate (DELSSOME)   nevergrad + scikit-learn
``gradient``         projected Adam through the simulator            jax
                     (Griffiths 2022; TVB-Optim 2025)
===================  ==============================================  ===========================

Backends are imported when an optimizer is built, never at import of this package; a missing
one raises ImportError naming the pip package. See :mod:`raybrain.search.base` for the contract.
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import Optimizer, check_bounds, _did_you_mean
from .bayesopt import BayesOpt
from .grid import GridSearch
from .hyperopt import HyperoptTPE
from .nevergrad import CMAES, DifferentialEvolution, ParticleSwarm
from .optuna import OptunaCMAES, OptunaTPE
from .random import RandomSearch
from .surrogate_cmaes import SurrogateCMAES

__all__ = ["Optimizer", "OPTIMIZERS", "get_optimizer", "validate_settings", "check_bounds"]

OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls
    for cls in (RandomSearch, GridSearch, CMAES, DifferentialEvolution, ParticleSwarm, OptunaTPE,
                OptunaCMAES, HyperoptTPE, BayesOpt, SurrogateCMAES)
}
OPTIMIZERS["gradient"] = __import__(f"{__name__}.gradient", fromlist=["GradientDescent"]).GradientDescent


def _lookup(name: str) -> type[Optimizer]:
    try:
        return OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}{_did_you_mean(name, OPTIMIZERS)}; "
                         f"choose from {', '.join(OPTIMIZERS)}") from None


def validate_settings(name: str, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check an optimizer name and the *keys* of its settings without building it (no backend
    import); returns the settings merged with the family's defaults. ValueError with a
    did-you-mean otherwise. Values are checked when the optimizer is built."""
    cls = _lookup(name)
    settings = dict(settings or {})
    for key in settings:
        if key not in cls.defaults:
            known = ", ".join(sorted(cls.defaults)) or "none"
            raise ValueError(f"unknown setting {key!r} for optimizer {name!r}"
                             f"{_did_you_mean(key, cls.defaults)}; accepted settings: {known}")
    return {**cls.defaults, **settings}


def get_optimizer(name: str, bounds, seed: int = 0, population: int | None = None, **settings) -> Optimizer:
    """Build optimizer ``name`` over ``bounds`` (P, 2) with ``seed`` and ``population`` candidates
    per :meth:`~Optimizer.ask` (None: the family's default) and family ``settings``."""
    return _lookup(name)(bounds, seed=seed, population=population, **settings)
