r"""Grid search: the Cartesian product of evenly spaced points per parameter.

Parameter :math:`j` takes ``points_per_dim[j]`` = :math:`k_j` values
``numpy.linspace(lower_j, upper_j, k_j)`` (both bounds included; :math:`k_j = 1` gives the middle
of the range). The :math:`\prod_j k_j` points are enumerated in C order (the last parameter varies
fastest) and handed out in chunks of ``population``; the last chunk may be shorter, after which
:attr:`done` is True. The points are generated chunk by chunk from their flat index, so a large
grid is never held in memory. Tells are ignored; the seed has no effect.
"""
from __future__ import annotations

import numpy as np

from .base import Optimizer

__all__ = ["GridSearch"]


class GridSearch(Optimizer):
    """Cartesian grid; setting ``points_per_dim`` (int, or one int per parameter; default 5)."""

    name = "grid"
    defaults = {"points_per_dim": 5}

    @classmethod
    def default_population(cls, dim: int) -> int:
        return 16

    def _setup(self) -> None:
        k = self.settings["points_per_dim"]
        k = np.full(self.dim, k) if np.ndim(k) == 0 else np.asarray(k)
        if (k.shape != (self.dim,) or not np.issubdtype(k.dtype, np.integer) or np.any(k < 1)):
            raise ValueError(f"grid: points_per_dim must be a positive integer or {self.dim} positive "
                             f"integers (one per parameter), got {self.settings['points_per_dim']!r}")
        self._k = tuple(int(x) for x in k)
        self._axes = [np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2.0])
                      for (lo, hi), n in zip(self.bounds, self._k)]
        self.size = int(np.prod(self._k, dtype=object))   # exact, no overflow
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= self.size

    def _ask_physical(self) -> np.ndarray:
        stop = min(self._next + self.population, self.size)
        flat = np.arange(self._next, stop, dtype=np.int64)
        idx = np.unravel_index(flat, self._k)
        self._next = stop
        return np.stack([ax[i] for ax, i in zip(self._axes, idx)], axis=1)
