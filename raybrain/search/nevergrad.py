r"""Evolutionary families from nevergrad: CMA-ES, differential evolution, particle swarm.

All three search the unit box :math:`[0, 1]^P` through a bounded ``nevergrad.p.Array``
(reflection at the bounds, nevergrad's "bouncing"), seeded through the parametrization's
``random_state``; one :meth:`ask` draws ``population`` candidates, each told back to the candidate
object nevergrad asked. Requires ``pip install nevergrad`` (tested with 1.0.12; ``NGOpt`` and
``MetaModel`` are avoided: they raise TypeError with numpy >= 2.4 in that release).

* ``"cmaes"`` — covariance matrix adaptation evolution strategy (Hansen 2016, "The CMA Evolution
  Strategy: A Tutorial", arXiv:1604.00772; pycma through ``nevergrad.optimizers.ParametrizedCMA``).
  Each generation samples :math:`\lambda` = ``population`` points
  :math:`x_k = m + \sigma\, \mathcal{N}(0, C)`; the mean moves to the weighted mean of the best
  :math:`\mu` (``parents``, default :math:`\lambda/2`), and :math:`\sigma` and :math:`C` adapt by
  cumulative step-size adaptation and rank-one/rank-:math:`\mu` updates. Starts at the centre of
  the box with step size ``sigma0`` in units of each parameter's range (default 1/6, so that
  the box is the initial :math:`m \pm 3\sigma` region).
* ``"de"`` — differential evolution (Storn & Price 1997, J. Global Optim. 11:341–359). Each member
  :math:`x_i` of a population of ``population`` vectors gets a trial vector from a mutant
  :math:`v = x_i + F_1 (x_a - x_b) + F_2 (x_{best} - x_i)` (nevergrad's current-to-best/1
  variant) by binomial ``crossover``; the trial replaces :math:`x_i` when it is no worse. The
  initial population is uniform over the box.
* ``"pso"`` — particle swarm optimisation (Kennedy & Eberhart 1995, Proc. ICNN'95 4:1942–1948):
  velocities :math:`v \leftarrow \omega v + \phi_p r_p (p_i - x) + \phi_g r_g (g - x)`,
  :math:`x \leftarrow x + v`, with the SPSO-2011 coefficients :math:`\omega = 1/(2\ln 2)`,
  :math:`\phi_p = \phi_g = 1/2 + \ln 2` by default (Zambrano-Bigiarini et al. 2013).

Trial mode: Tune's ``NevergradSearch`` with the same configured optimizer (same settings, same
defaults; a generation of the trials in flight, at least the family's default population) over
Tune's bounded scalars, whose standardised unit is also a sixth of each range, so ``sigma0``
means the same in both modes; seeded through the parametrization as above
(:class:`raybrain.tuning.searchers.SeededNevergrad`).
"""
from __future__ import annotations

import functools

import numpy as np

from .base import Optimizer, require

__all__ = ["NevergradOptimizer", "CMAES", "DifferentialEvolution", "ParticleSwarm"]


class NevergradOptimizer(Optimizer):
    """Common ask–tell plumbing for a nevergrad optimizer on the unit box."""

    @classmethod
    def configured(cls, ng, settings, dim: int, population: int):  # pragma: no cover - abstract
        """The ``nevergrad`` ConfiguredOptimizer for ``settings`` (merged with the defaults) over
        ``dim`` parameters with ``population`` candidates per generation."""
        raise NotImplementedError

    @classmethod
    def trial_searcher(cls, names, bounds, seed, settings, max_concurrent):
        from ..tuning.searchers import SeededNevergrad

        require("nevergrad", "nevergrad")
        # the dimension is known once Tune gives the search space
        return SeededNevergrad(configure=functools.partial(cls._trial_configured, settings=dict(settings),
                                                           max_concurrent=max_concurrent),
                               optimizer_kwargs={"num_workers": max_concurrent}, seed=seed)

    @classmethod
    def _trial_configured(cls, ng, dim, settings, max_concurrent):
        return cls.configured(ng, settings, dim, cls.trial_population(dim, max_concurrent))

    def _setup(self) -> None:
        ng = require("nevergrad", "nevergrad")
        param = ng.p.Array(shape=(self.dim,), lower=0.0, upper=1.0)
        param.random_state = np.random.RandomState(self.seed)
        conf = self.configured(ng, self.settings, self.dim, self.population)
        self._ng = conf(parametrization=param, budget=None, num_workers=self.population)
        # CMA, DE and PSO propose from their own state, never from nevergrad's archive of every
        # told point; capping it keeps the checkpointed state (and its pickling) small
        from nevergrad.optimization.utils import Pruning

        self._ng.pruning = Pruning(min_len=10, max_len=max(2 * self.population, 30))  # max_len > min_len
        self._cands: list = []

    def _ask_unit(self) -> np.ndarray:
        self._cands = [self._ng.ask() for _ in range(self.population)]
        return np.array([c.value for c in self._cands], dtype=np.float64)

    def _tell(self, index, losses) -> None:
        for i, y in zip(index, losses):
            self._ng.tell(self._cands[i], float(y))


def _positive(name, value, what="a positive number"):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ValueError(f"setting {name!r} must be {what}, got {value!r}")
    return value


class CMAES(NevergradOptimizer):
    """CMA-ES (Hansen 2016) via nevergrad/pycma. Settings: ``sigma0`` (initial step size as a
    fraction of each parameter's range, default 1/6), ``parents`` (:math:`\\mu`, default
    population // 2), ``diagonal`` (separable CMA, default False), ``elitist`` (default False)."""

    name = "cmaes"
    defaults = {"sigma0": 1.0 / 6.0, "parents": None, "diagonal": False, "elitist": False}

    @classmethod
    def default_population(cls, dim: int) -> int:
        # Hansen 2016, table 1: lambda = 4 + floor(3 ln n)
        return 4 + int(3 * np.log(dim))

    @classmethod
    def configured(cls, ng, settings, dim, population):
        s = settings
        sigma0 = float(_positive("sigma0", s["sigma0"]))
        inopts = {}
        if s["parents"] is not None:
            mu = s["parents"]
            if isinstance(mu, bool) or not isinstance(mu, (int, np.integer)) or not 1 <= mu <= population:
                raise ValueError(f"cmaes: setting 'parents' must be an integer in [1, population="
                                 f"{population}], got {mu!r}")
            inopts["CMA_mu"] = int(mu)
        # nevergrad's CMA step size in its standardized space is scale * m, with m = 0.3 for a
        # fully bounded space of dimension < 18 and 0.15 otherwise, and one standardized unit is
        # (upper - lower) / 6 for a bounded Array (or Scalar): scale = sigma0 * 6 / m gives sigma0
        # in the box.
        m = 0.3 if dim < 18 else 0.15
        return ng.optimizers.ParametrizedCMA(scale=sigma0 * 6.0 / m, popsize=population,
                                             diagonal=bool(s["diagonal"]), elitist=bool(s["elitist"]),
                                             inopts=inopts or None)


class DifferentialEvolution(NevergradOptimizer):
    """Differential evolution (Storn & Price 1997) via nevergrad. Settings: ``crossover``
    (probability, or "twopoints"/"onepoint"/"dimension"/"random", default 0.5), ``F1``, ``F2``
    (differential weights, default 0.8), ``initialization`` ("parametrization" = uniform, "LHS",
    "QR"; default "parametrization")."""

    name = "de"
    defaults = {"crossover": 0.5, "F1": 0.8, "F2": 0.8, "initialization": "parametrization"}

    @classmethod
    def default_population(cls, dim: int) -> int:
        return max(10, 5 * dim)

    @classmethod
    def configured(cls, ng, settings, dim, population):
        s = settings
        if s["initialization"] not in ("parametrization", "LHS", "QR"):
            raise ValueError(f"de: setting 'initialization' must be 'parametrization', 'LHS' or 'QR', "
                             f"got {s['initialization']!r}")
        return ng.families.DifferentialEvolution(
            popsize=population, crossover=s["crossover"], F1=float(_positive("F1", s["F1"])),
            F2=float(_positive("F2", s["F2"])), initialization=s["initialization"])


class ParticleSwarm(NevergradOptimizer):
    """Particle swarm optimisation (Kennedy & Eberhart 1995) via nevergrad. Settings: ``omega``
    (inertia), ``phip`` (cognitive), ``phig`` (social); SPSO-2011 defaults."""

    name = "pso"
    defaults = {"omega": 0.5 / np.log(2.0), "phip": 0.5 + np.log(2.0), "phig": 0.5 + np.log(2.0)}

    @classmethod
    def default_population(cls, dim: int) -> int:
        return 40

    @classmethod
    def configured(cls, ng, settings, dim, population):
        s = settings
        return ng.families.ConfPSO(popsize=population, omega=float(_positive("omega", s["omega"])),
                                   phip=float(_positive("phip", s["phip"])),
                                   phig=float(_positive("phig", s["phig"])))
