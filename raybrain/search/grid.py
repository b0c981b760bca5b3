r"""Grid search: the Cartesian product of evenly spaced points per parameter.

Parameter :math:`j` takes ``points_per_dim[j]`` = :math:`k_j` values
``numpy.linspace(lower_j, upper_j, k_j)`` (both bounds included; :math:`k_j = 1` gives the middle
of the range). The :math:`\prod_j k_j` points are enumerated in C order (the last parameter varies
fastest) and handed out in chunks of ``population``; the last chunk may be shorter, after which
:attr:`done` is True. The points are generated chunk by chunk from their flat index, so a large
grid is never held in memory. Tells are ignored; the seed has no effect.

In an experiment, ``points_per_dim`` defaults to the most points per parameter whose grid fits
``budget.evaluations`` (:meth:`GridSearch.complete_settings`); in trial mode the same points,
in the same order, are one trial each (:meth:`GridSearch.trial_searcher`).
"""
from __future__ import annotations

import math

import numpy as np

from .base import Optimizer, SettingError

__all__ = ["GridSearch"]


class GridSearch(Optimizer):
    """Cartesian grid; setting ``points_per_dim`` (int, or one int per parameter; default 5)."""

    name = "grid"
    defaults = {"points_per_dim": 5}

    @classmethod
    def default_population(cls, dim: int) -> int:
        return 16

    @classmethod
    def complete_settings(cls, settings, dim: int, evaluations: int) -> dict:
        """Without ``points_per_dim``: the most points per parameter whose grid fits
        ``evaluations``; with it, :class:`SettingError` when its grid exceeds ``evaluations``."""
        out = dict(settings)
        if "points_per_dim" not in out:
            out["points_per_dim"] = max(1, int(math.floor(evaluations ** (1.0 / max(dim, 1)) + 1e-9)))
            return out
        k = out["points_per_dim"]
        try:
            size = int(np.prod(np.broadcast_to(np.asarray(k, dtype=object), (dim,)), dtype=object))
        except (ValueError, TypeError):
            raise SettingError("settings.points_per_dim", f"points_per_dim must be a positive integer or {dim} "
                               f"positive integers (one per parameter), got {k!r}") from None
        if size > evaluations:
            raise SettingError("settings.points_per_dim",
                               f"a grid of {size} points exceeds budget.evaluations = {evaluations}; lower "
                               "points_per_dim (or leave it out: the budget then sets it) or raise the budget")
        return out

    @classmethod
    def trial_searcher(cls, names, bounds, seed, settings, max_concurrent):
        """Every point of the same grid, in the same order, one trial each
        (:class:`raybrain.tuning.searchers.GridPoints`)."""
        from ..tuning.searchers import GridPoints

        axes = cls.axes(bounds, settings["points_per_dim"])
        return GridPoints({n: [float(x) for x in ax] for n, ax in zip(names, axes)})

    @staticmethod
    def axes(bounds, points_per_dim) -> list[np.ndarray]:
        """The points of each parameter: ``points_per_dim`` (int, or one per parameter) evenly
        spaced values over ``bounds`` (P, 2), both ends included; one point is the middle."""
        bounds = np.asarray(bounds, dtype=np.float64)
        k = np.full(len(bounds), points_per_dim) if np.ndim(points_per_dim) == 0 else np.asarray(points_per_dim)
        if (k.shape != (len(bounds),) or not np.issubdtype(k.dtype, np.integer) or np.any(k < 1)):
            raise ValueError(f"grid: points_per_dim must be a positive integer or {len(bounds)} positive "
                             f"integers (one per parameter), got {points_per_dim!r}")
        return [np.linspace(lo, hi, int(n)) if n > 1 else np.array([(lo + hi) / 2.0]) for (lo, hi), n in zip(bounds, k)]

    def _setup(self) -> None:
        self._axes = self.axes(self.bounds, self.settings["points_per_dim"])
        self._k = tuple(len(ax) for ax in self._axes)
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
