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
one raises ImportError naming the pip package. See :mod:`raybrain.search.base` for the contract
and the hooks through which a family runs in an experiment's two modes.

A config may also name a family of its own as ``package.module:Class`` (:mod:`.custom`): a
subclass of :class:`Optimizer`, or a Tune ``Searcher`` (trial mode only); :func:`family` resolves
both.
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import Optimizer, SettingError, check_bounds, _did_you_mean
from .bayesopt import BayesOpt
from .grid import GridSearch
from .hyperopt import HyperoptTPE
from .nevergrad import CMAES, DifferentialEvolution, ParticleSwarm
from .optuna import OptunaCMAES, OptunaTPE
from .random import RandomSearch
from .surrogate_cmaes import SurrogateCMAES

__all__ = ["Optimizer", "OPTIMIZERS", "SettingError", "family", "get_optimizer", "validate_settings",
           "check_bounds"]

OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls
    for cls in (RandomSearch, GridSearch, CMAES, DifferentialEvolution, ParticleSwarm, OptunaTPE,
                OptunaCMAES, HyperoptTPE, BayesOpt, SurrogateCMAES)
}
OPTIMIZERS["gradient"] = __import__(f"{__name__}.gradient", fromlist=["GradientDescent"]).GradientDescent


def family(name: str) -> type[Optimizer]:
    """The class of optimizer family ``name``: a key of :data:`OPTIMIZERS`, or ``module:Class``
    (:func:`.custom.import_family`). ValueError (one line, with a did-you-mean) otherwise."""
    if isinstance(name, str) and ":" in name:
        from .custom import import_family

        return import_family(name)
    try:
        return OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}{_did_you_mean(name, OPTIMIZERS)}; "
                         f"choose from {', '.join(OPTIMIZERS)} (or name your own as 'package.module:Class')"
                         ) from None


def validate_settings(name: str, settings: Mapping[str, Any] | None = None, mode: str = "population") -> dict[str, Any]:
    """Check an optimizer name and the *keys* of its settings for ``mode`` ("population" or
    "trial") without building it (no backend import); returns the settings merged with the
    family's defaults. ValueError with a did-you-mean (a :class:`SettingError` naming the key for
    a setting or mode the family refuses) otherwise. Values are checked when the optimizer is
    built."""
    return family(name).check_settings(settings, mode)


def get_optimizer(name: str, bounds, seed: int = 0, population: int | None = None, **settings) -> Optimizer:
    """Build optimizer ``name`` over ``bounds`` (P, 2) with ``seed`` and ``population`` candidates
    per :meth:`~Optimizer.ask` (None: the family's default) and family ``settings``."""
    return family(name)(bounds, seed=seed, population=population, **settings)
