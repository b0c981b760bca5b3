r"""``gradient``: projected Adam on a differentiable loss, in the ask–tell contract (Griffiths 2022).

A gradient step needs the *gradient* of the objective, which the ask–tell contract never passes
(:meth:`tell` receives loss values only). This family therefore takes a differentiable loss
through the ``loss_fn`` setting — a function of one parameter vector ``theta`` (P,) (a JAX
array, in parameter units, ordered as ``bounds``) returning a scalar, e.g. built with
:func:`raybrain.gradient.vector_loss` — and runs its own inner loop:

* ``ask()`` advances each of its K iterates by ``inner_steps`` Adam steps of ``loss_fn`` (in the
  unit box of ``bounds``, clipped to it; step size ``lr · lr_decay**t``) and returns the K
  iterates, shape (K, P). The first ask returns the starting points unchanged.
* ``tell()`` receives the *real* objective's losses of those iterates (e.g. the full ``pfic`` loss
  with its FCD term, which ``loss_fn`` may only approximate): they decide :attr:`best_theta`,
  and an iterate whose told loss got worse than its best ``patience`` tells in a row is frozen
  (:attr:`done` when all are frozen, or after ``max_generations``).

Starting points (``population`` = K): ``refine_from`` (a (K, P) array, e.g. the best candidates of
a coarse random/grid/CMA-ES search: *explore, then refine*; see :func:`refine`), else ``x0``
(P,), else K points of a seeded uniform draw (K = 1: the box centre).

Checkpoints: :meth:`state` pickles everything except ``loss_fn`` (a closure over JAX objects is
not picklable); after :meth:`Optimizer.from_state` call :meth:`attach` with the loss again.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .base import Optimizer, require

__all__ = ["GradientDescent", "refine"]


class GradientDescent(Optimizer):
    """Multi-start projected Adam (see the module docstring)."""

    name = "gradient"
    defaults = {
        "loss_fn": None,        # callable theta (P,) -> scalar, differentiable with JAX (required)
        "lr": 0.05,             # Adam step as a fraction of each parameter's range
        "lr_decay": 1.0,        # step size factor per inner step
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "inner_steps": 1,       # Adam steps per ask
        "x0": None,             # (P,) start (K = 1)
        "refine_from": None,    # (K, P) starts: explore-then-refine
        "patience": 3,          # tells without improvement before an iterate is frozen
        "max_generations": None,
        "jit": True,
    }

    @classmethod
    def default_population(cls, dim: int) -> int:
        return 1

    def _setup(self) -> None:
        st = self.settings
        for key in ("lr", "eps"):
            if not (isinstance(st[key], (int, float)) and st[key] > 0):
                raise ValueError(f"gradient: {key} must be > 0, got {st[key]!r}")
        if not (isinstance(st["lr_decay"], (int, float)) and 0 < st["lr_decay"] <= 1):
            raise ValueError(f"gradient: lr_decay must be in (0, 1], got {st['lr_decay']!r}")
        for key in ("inner_steps", "patience"):
            if isinstance(st[key], bool) or not isinstance(st[key], (int, np.integer)) or st[key] < 1:
                raise ValueError(f"gradient: {key} must be a positive integer, got {st[key]!r}")
        if st["refine_from"] is not None:
            starts = np.asarray(st["refine_from"], dtype=np.float64)
            if starts.ndim != 2 or starts.shape[1] != self.dim or len(starts) < 1:
                raise ValueError(f"gradient: refine_from must have shape (K, {self.dim}), got {starts.shape}")
            self.population = len(starts)
        elif st["x0"] is not None:
            starts = np.asarray(st["x0"], dtype=np.float64).reshape(1, -1)
            if starts.shape[1] != self.dim:
                raise ValueError(f"gradient: x0 must have {self.dim} values, got {starts.shape[1]}")
            self.population = 1
        elif self.population == 1:
            starts = self.bounds.mean(axis=1)[None]
        else:
            starts = self.from_unit(np.random.default_rng(self.seed).random((self.population, self.dim)))
        if not np.all(np.isfinite(starts)):
            raise ValueError("gradient: starting points must be finite")
        self._u = np.clip(self.to_unit(starts), 0.0, 1.0)
        self._m1 = np.zeros_like(self._u)
        self._m2 = np.zeros_like(self._u)
        self._t = np.zeros(len(self._u), dtype=np.int64)
        self._best = np.full(len(self._u), np.inf)
        self._stale = np.zeros(len(self._u), dtype=np.int64)
        self._active = np.ones(len(self._u), dtype=bool)
        self._asked_once = False
        self.last_grad_norm = np.full(len(self._u), np.nan)
        self._vg = None
        self._loss_fn = st.pop("loss_fn", None)
        st["loss_fn"] = None  # keep the settings picklable; the function lives in _loss_fn

    # -- loss ------------------------------------------------------------------------------------
    def attach(self, loss_fn: Callable) -> "GradientDescent":
        """(Re)attach the differentiable loss, e.g. after :meth:`from_state`."""
        self._loss_fn, self._vg = loss_fn, None
        return self

    def _value_and_grad(self):
        if self._loss_fn is None:
            raise ValueError("gradient: needs a differentiable loss: pass loss_fn=... (a function of theta (P,) "
                             "returning a scalar; see raybrain.gradient.vector_loss), or attach() one")
        if self._vg is None:
            jax = require("jax", "jax")
            vg = jax.value_and_grad(self._loss_fn)
            self._vg = jax.jit(vg) if self.settings["jit"] else vg
        return self._vg

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_vg"] = None
        d["_loss_fn"] = None
        return d

    # -- ask / tell ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        mg = self.settings["max_generations"]
        return (not self._active.any()) or (mg is not None and self.generation >= mg)

    def _ask_physical(self) -> np.ndarray:
        if self._asked_once:
            import jax.numpy as jnp

            vg = self._value_and_grad()
            b1, b2 = self.settings["betas"]
            lr, decay, eps = self.settings["lr"], self.settings["lr_decay"], self.settings["eps"]
            span = self.bounds[:, 1] - self.bounds[:, 0]
            for k in np.flatnonzero(self._active):
                for _ in range(int(self.settings["inner_steps"])):
                    theta = self.from_unit(self._u[k])
                    _, g = vg(jnp.asarray(theta))
                    g = np.asarray(g, dtype=np.float64) * span
                    self.last_grad_norm[k] = float(np.linalg.norm(g))
                    if not np.all(np.isfinite(g)):
                        break
                    self._t[k] += 1
                    t = self._t[k]
                    self._m1[k] = b1 * self._m1[k] + (1 - b1) * g
                    self._m2[k] = b2 * self._m2[k] + (1 - b2) * g * g
                    step = (self._m1[k] / (1 - b1 ** t)) / (np.sqrt(self._m2[k] / (1 - b2 ** t)) + eps)
                    self._u[k] = np.clip(self._u[k] - lr * decay ** (t - 1) * step, 0.0, 1.0)
        self._asked_once = True
        return self.from_unit(self._u)

    def _tell(self, index: np.ndarray, losses: np.ndarray) -> None:
        for k, y in zip(index, losses):
            if y < self._best[k]:
                self._best[k], self._stale[k] = y, 0
            else:
                self._stale[k] += 1
                if self._stale[k] >= self.settings["patience"]:
                    self._active[k] = False


def refine(coarse: Optimizer | tuple, k: int = 4, **settings) -> GradientDescent:
    """Explore-then-refine: a :class:`GradientDescent` started at the ``k`` best candidates of a
    coarse search. ``coarse`` is either ``(thetas (M, P), losses (M,), bounds (P, 2))`` (e.g. the
    rows of a finished random/grid/CMA-ES run) or an optimizer (only its ``best_theta`` is kept by
    the base class, so K = 1 then)."""
    if isinstance(coarse, Optimizer):
        if coarse.best_theta is None:
            raise ValueError("refine: the coarse optimizer has not been told any loss yet")
        starts, bounds = coarse.best_theta[None], coarse.bounds
    else:
        thetas, losses, bounds = coarse
        thetas, losses = np.asarray(thetas, np.float64), np.asarray(losses, np.float64).reshape(-1)
        order = np.argsort(np.where(np.isfinite(losses), losses, np.inf), kind="stable")
        starts = thetas[order[:int(k)]]
    return GradientDescent(bounds, refine_from=starts, **settings)
