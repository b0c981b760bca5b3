r"""Ask–tell optimizer interface shared by every search family.

An :class:`Optimizer` proposes one *generation* of candidate parameter vectors at a time and is
told their losses (lower is better)::

    opt = get_optimizer("cmaes", bounds, seed=0, population=32, sigma0=0.25)
    while not opt.done and opt.n_told < budget:
        theta = opt.ask()                      # (n, P), inside bounds
        opt.tell(theta, objective(theta))      # losses (n,), finite

Contract (identical for every family):

* ``bounds`` is a (P, 2) array of ``[lower, upper]`` per parameter with ``lower < upper``.
  Families that have a natural scale work in the unit box :math:`u \in [0, 1]^P`,
  :math:`\theta = l (1 - u) + h u`, so that settings such as CMA-ES's ``sigma0`` are
  fractions of each parameter's range.
* :meth:`ask` returns ``population`` rows (a grid's last chunk may be shorter), always inside the
  bounds. Every row of an ask must be told before the next ask (:meth:`tell` may be called several
  times for one generation); rows are matched to the asked candidates by value (order free), and
  the backend always receives them in ask order, so the result does not depend on the tell order.
* :meth:`tell` takes finite losses only; an objective must map failed simulations to a finite
  worst cost (as :mod:`raybrain.losses` does).
* Determinism: the same ``seed`` gives the same sequence of asks given the same tells.
* :attr:`done` is True once the optimizer can propose nothing more (an exhausted grid); budgets
  are the caller's business.
* Checkpoints: :meth:`state` returns ``pickle`` bytes of the whole optimizer (backend included);
  :meth:`Optimizer.from_state` restores it, and the restored object continues exactly as the
  original would. Like any pickle, only load state you wrote yourself.

A family also declares how it runs in an experiment (:mod:`raybrain.tuning`), through class
hooks with defaults here:

* :attr:`~Optimizer.modes` — the experiment modes it runs in; :meth:`~Optimizer.check_settings`
  refuses another mode, an unknown setting, or a setting the mode cannot honour
  (:attr:`~Optimizer.population_only`) with a :class:`SettingError` naming the key, when the
  config is validated (before Ray starts);
* :meth:`~Optimizer.complete_settings` — settings completed from the experiment (grid: the points
  per parameter that fit the budget);
* :meth:`~Optimizer.trial_searcher` — its trial-mode form: a Tune ``Searcher`` honouring the
  same settings with the same defaults as the ask/tell form (by default the ask/tell optimizer
  itself, wrapped: :class:`raybrain.tuning.searchers.AskTell`);
* :meth:`~Optimizer.attach_objective` — the run's objective, given before the first ask of a
  population run (a family that learns from or differentiates the objective itself).
"""
from __future__ import annotations

import importlib
import pickle
from typing import Any, ClassVar, Mapping

import numpy as np

from .._text import did_you_mean as _did_you_mean

__all__ = ["Optimizer", "SettingError", "check_bounds", "require"]

#: Two rows are the same candidate when they differ by at most this much in the unit box.
MATCH_TOL = 1e-9


def check_bounds(bounds) -> np.ndarray:
    """``bounds`` as a float (P, 2) array with finite ``lower < upper``; ValueError otherwise."""
    try:
        b = np.array(bounds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bounds must be a (P, 2) array of numbers: {exc}") from None
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] < 1:
        raise ValueError(f"bounds must have shape (P, 2) with P >= 1, got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("bounds must be finite")
    bad = np.flatnonzero(~(b[:, 0] < b[:, 1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds[{i}] = [{b[i, 0]:g}, {b[i, 1]:g}]: lower must be < upper")
    return b


def require(module: str, package: str):
    """Import an optional backend lazily; ImportError naming the pip package when missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this optimizer needs the '{package}' package: pip install \"{package}\" "
                          f"({exc})") from exc


class SettingError(ValueError):
    """A setting (or mode) an optimizer family refuses. ``key`` is its path in the optimizer's
    entry of an experiment config (``"settings.sigma0"``, ``"mode"``); the message names it too."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(message)


class Optimizer:
    """Base class: ask–tell over a box, see the module docstring for the contract.

    Subclasses set :attr:`name`, :attr:`defaults` (every accepted setting with its default; any
    other key is refused) and implement :meth:`_setup`, :meth:`_ask_unit` (or
    :meth:`_ask_physical`) and :meth:`_tell`.

    Attributes after construction: ``bounds`` (P, 2), ``dim`` (P), ``seed``, ``population``,
    ``settings`` (defaults merged with the given settings), ``n_asked``, ``n_told``,
    ``generation`` (number of asks so far), ``best_theta`` (P,) and ``best_loss`` (``inf`` before
    the first tell).
    """

    name: ClassVar[str] = ""
    #: accepted settings and their defaults
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: the experiment modes the family runs in ("population": ask/tell generations inside one Tune
    #: trial per run; "trial": one Tune trial per candidate, see :meth:`trial_searcher`)
    modes: ClassVar[tuple[str, ...]] = ("population", "trial")
    #: settings the trial-mode form cannot honour (refused in trial mode, by name)
    population_only: ClassVar[frozenset] = frozenset()

    def __init__(self, bounds, seed: int = 0, population: int | None = None, **settings):
        self.bounds = check_bounds(bounds)
        self.dim = int(self.bounds.shape[0])
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{self.name}: seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        if population is None:
            population = self.default_population(self.dim)
        if isinstance(population, bool) or not isinstance(population, (int, np.integer)) or population < 1:
            raise ValueError(f"{self.name}: population must be a positive integer, got {population!r}")
        self.population = int(population)
        for key in settings:
            self._check_key(key)
        self.settings = {**self.defaults, **settings}
        self.n_asked = 0
        self.n_told = 0
        self.generation = 0
        self.best_theta: np.ndarray | None = None
        self.best_loss = float("inf")
        self._pending: np.ndarray | None = None      # physical rows of the last ask
        self._left: np.ndarray | None = None         # which of them are not told yet
        self._setup()

    # -- to implement -------------------------------------------------------------------------
    @classmethod
    def default_population(cls, dim: int) -> int:
        """Population used when none is given."""
        return 8

    @classmethod
    def trial_population(cls, dim: int, max_concurrent: int) -> int:
        """Candidates per generation of the trial-mode form: the trials in flight, and at least
        :meth:`default_population` (one trial at a time must not make CMA-ES a (1, 1)-ES)."""
        return max(int(max_concurrent), cls.default_population(dim))

    # -- hooks of the experiment (defaults; a family overrides what it needs) -----------------
    @classmethod
    def check_settings(cls, settings: Mapping[str, Any] | None = None, mode: str = "population") -> dict[str, Any]:
        """``settings`` merged with :attr:`defaults`, checked by name (no backend import) for
        ``mode``: :class:`SettingError` naming the key for a mode not in :attr:`modes`, an unknown
        setting (with a did-you-mean) or, in trial mode, one of :attr:`population_only`. Values
        are checked when the optimizer (or its searcher) is built."""
        cls.check_mode(mode)
        settings = dict(settings or {})
        for key in settings:
            cls._check_key(key)
            if mode == "trial" and key in cls.population_only:
                raise SettingError(f"settings.{key}", f"setting {key!r} of optimizer {cls.family_name()!r} applies to "
                                   f"mode 'population' only: its trial-mode searcher cannot honour it")
        return {**cls.defaults, **settings}

    @classmethod
    def check_mode(cls, mode: str) -> None:
        """:class:`SettingError` (key ``mode``) when the family does not run in ``mode``."""
        if mode not in cls.modes:
            raise SettingError("mode", f"optimizer {cls.family_name()!r} runs in mode "
                               f"{' or '.join(repr(m) for m in cls.modes)} only, not {mode!r}")

    @classmethod
    def complete_settings(cls, settings: Mapping[str, Any], dim: int, evaluations: int) -> dict[str, Any]:
        """The settings of a run over ``dim`` parameters with a budget of ``evaluations``, completed
        from the experiment (default: as given). :class:`SettingError` naming the key when they
        cannot fit it."""
        return dict(settings)

    @classmethod
    def trial_searcher(cls, names, bounds, seed: int, settings: Mapping[str, Any], max_concurrent: int):
        """The trial-mode form: a Tune ``Searcher`` over parameters ``names`` within ``bounds``
        (P, 2), seeded with ``seed``, that honours ``settings`` (merged with :attr:`defaults` by
        :meth:`check_settings`) with the same defaults as the ask/tell form, for ``max_concurrent``
        trials in flight (the caller numbers and limits them; Tune's ``set_search_properties``
        gives it the search space too). Default: this ask/tell family itself, a generation of
        :meth:`trial_population` candidates at a time
        (:class:`raybrain.tuning.searchers.AskTell`)."""
        from ..tuning.searchers import AskTell

        return AskTell(cls, seed=seed, max_concurrent=max_concurrent, settings=settings)

    @classmethod
    def check_experiment(cls, experiment) -> None:
        """What the family needs of the whole experiment (a validated
        :class:`raybrain.experiment.ExperimentConfig`), checked once at validation: raise
        :class:`SettingError` naming the key of this optimizer entry (e.g. ``"name"``) and the
        problem. Default: nothing."""

    def attach_objective(self, objective, seed=None, repeats: int = 1) -> None:
        """The run's objective, given by the population trainable before the first ask (and again
        after a restore), with the noise ``seed`` and ``repeats`` of its evaluations. Default:
        nothing; a family that learns from or differentiates the objective itself overrides it."""

    @classmethod
    def family_name(cls) -> str:
        """The family's name for messages: :attr:`name`, else ``module:Class``."""
        return cls.name or f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def _check_key(cls, key) -> None:
        if key not in cls.defaults:
            known = ", ".join(sorted(cls.defaults)) or "none"
            raise SettingError(f"settings.{key}", f"unknown setting {key!r} for optimizer {cls.family_name()!r}"
                               f"{_did_you_mean(key, cls.defaults)}; accepted settings: {known}")

    def _setup(self) -> None:
        """Create the backend (lazy imports here)."""

    def _ask_unit(self) -> np.ndarray:  # pragma: no cover - abstract
        """One generation in the unit box, shape (n, P)."""
        raise NotImplementedError

    def _ask_physical(self) -> np.ndarray:
        """One generation in parameter units; default maps :meth:`_ask_unit` from the unit box."""
        return self.from_unit(self._ask_unit())

    def _tell(self, index: np.ndarray, losses: np.ndarray) -> None:
        """Losses of rows ``index`` (ascending) of the last ask."""

    # -- public API ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True when the optimizer can propose nothing more."""
        return False

    def to_unit(self, theta) -> np.ndarray:
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        return (np.asarray(theta, dtype=np.float64) - lo) / (hi - lo)

    def from_unit(self, u) -> np.ndarray:
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        return lo * (1.0 - u) + hi * u

    def ask(self) -> np.ndarray:
        """The next generation, shape (n, P), every row inside ``bounds``."""
        if self._left is not None and self._left.any():
            raise RuntimeError(f"{self.name}: tell() the {int(self._left.sum())} untold candidate(s) "
                               f"of the previous ask() first")
        if self.done:
            raise RuntimeError(f"{self.name}: nothing left to propose (check .done before ask())")
        theta = np.asarray(self._ask_physical(), dtype=np.float64).reshape(-1, self.dim)
        theta = np.ascontiguousarray(np.clip(theta, self.bounds[:, 0], self.bounds[:, 1]))
        self._pending = theta.copy()
        self._left = np.ones(len(theta), dtype=bool)
        self.n_asked += len(theta)
        self.generation += 1
        return theta

    def tell(self, theta, losses) -> None:
        """Report ``losses`` (n,) for rows ``theta`` (n, P) of the last :meth:`ask`."""
        t = np.asarray(theta, dtype=np.float64)
        if t.ndim == 1 and t.size == self.dim:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise ValueError(f"{self.name}: theta must have shape (n, {self.dim}), got {np.shape(theta)}")
        y = np.asarray(losses, dtype=np.float64).reshape(-1) if np.ndim(losses) <= 1 else None
        if y is None or y.shape[0] != t.shape[0]:
            raise ValueError(f"{self.name}: losses must have shape ({t.shape[0]},) to match theta, "
                             f"got {np.shape(losses)}")
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise ValueError(f"{self.name}: losses[{int(bad[0])}] = {y[bad[0]]} is not finite; "
                             f"map failed evaluations to a finite worst loss")
        if self._pending is None:
            raise RuntimeError(f"{self.name}: tell() before any ask()")
        index = self._match(t)
        order = np.argsort(index, kind="stable")
        index, y = index[order], y[order]
        self._tell(index, y)
        self._left[index] = False
        self.n_told += len(index)
        if len(y):
            k = int(np.argmin(y))
            if y[k] < self.best_loss:
                self.best_loss = float(y[k])
                self.best_theta = self._pending[index[k]].copy()

    def state(self) -> bytes:
        """Checkpoint: ``pickle`` bytes of the whole optimizer (see :meth:`from_state`)."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_state(cls, data: bytes) -> "Optimizer":
        """Restore an optimizer from :meth:`state` bytes (trusted input only: it is a pickle)."""
        obj = pickle.loads(data)
        if not isinstance(obj, cls):
            raise ValueError(f"state holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, seed={self.seed}, "
                f"population={self.population}, settings={self.settings})")

    # -- helpers ------------------------------------------------------------------------------
    def _match(self, t: np.ndarray) -> np.ndarray:
        """Index into the last ask of each row of ``t``; each outstanding row at most once."""
        span = self.bounds[:, 1] - self.bounds[:, 0]
        left = np.flatnonzero(self._left)
        # fast path: exactly the outstanding rows, in ask order
        if len(t) == len(left) and np.all(np.abs(t - self._pending[left]) <= MATCH_TOL * span):
            return left.copy()
        free = self._left.copy()
        out = np.empty(len(t), dtype=np.int64)
        for i, row in enumerate(t):
            close = free & np.all(np.abs(self._pending - row) <= MATCH_TOL * span, axis=1)
            hit = np.flatnonzero(close)
            if not hit.size:
                raise ValueError(f"{self.name}: theta[{i}] = {np.array2string(row, precision=6)} is not an "
                                 f"untold candidate of the last ask()")
            out[i] = hit[0]
            free[hit[0]] = False
        return out
