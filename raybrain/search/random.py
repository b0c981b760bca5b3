r"""Random search: independent uniform draws over the box.

Each candidate is :math:`u \sim \mathcal{U}[0, 1]^P`, :math:`\theta = l (1 - u) + h u`, from a
``numpy.random.Generator`` (PCG64) seeded with ``seed``. Random search is the baseline every
other family must beat; on problems with few important parameters it is competitive with grid
search at any budget (Bergstra & Bengio 2012, "Random search for hyper-parameter optimization",
JMLR 13:281–305). Tells are ignored; the sequence of asks depends only on the seed.

Trial mode: :class:`raybrain.tuning.searchers.SeededRandom`, uniform draws over the same
box from the run seed.
"""
from __future__ import annotations

import numpy as np

from .base import Optimizer

__all__ = ["RandomSearch"]


class RandomSearch(Optimizer):
    """Uniform random search (no settings); never ``done``."""

    name = "random"
    defaults = {}

    @classmethod
    def default_population(cls, dim: int) -> int:
        return 16

    @classmethod
    def trial_searcher(cls, names, bounds, seed, settings, max_concurrent):
        from ..tuning.searchers import SeededRandom

        return SeededRandom({n: (float(lo), float(hi)) for n, (lo, hi) in zip(names, bounds)}, seed=seed)

    def _setup(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _ask_unit(self) -> np.ndarray:
        return self._rng.random((self.population, self.dim))

