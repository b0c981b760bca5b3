r"""``gradient``: projected Adam on a differentiable loss (Kingma & Ba 2015; Griffiths 2022).

Two forms: :func:`adam_fit`, projected Adam on a loss of a parameter pytree (a dict of scalars and
arrays, e.g. :meth:`raybrain.jax_backend.JaxSimulator.bold` fed to
:func:`raybrain.losses.differentiable.fc_loss`), and :class:`GradientDescent`, the same steps in
the ask–tell contract of :mod:`raybrain.search`. Both optimise each parameter in the unit box of
its bounds, ``u = (θ − lo)/(hi − lo)``, clipped to [0, 1] after each step (no optax dependency).

A gradient step needs the *gradient* of the objective, which the ask–tell contract never passes
(:meth:`tell` receives loss values only). This family therefore takes a differentiable loss
through the ``loss_fn`` setting — a function of one parameter vector ``theta`` (P,) (a JAX
array, in parameter units, ordered as ``bounds``) returning a scalar, e.g. built with
:func:`raybrain.losses.differentiable.vector_loss` — and runs its own inner loop:

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

In experiments (:func:`raybrain.tuning.trainables.population_trainable`) the loss is built from the
run's objective by :meth:`GradientDescent.attach_objective`:
:class:`raybrain.losses.differentiable.ObjectiveLoss`, a differentiable stand-in for the objective's
loss (FC terms exact, the FCD KS term replaced by the smoothed KS distance
:func:`raybrain.losses.differentiable.soft_ks`), simulated by the model on JAX
(:mod:`raybrain.jax_backend`) with ``grad_repeats`` fixed noise realisations per Adam step (fresh ones each step with
``resample: true``, the same ones throughout with ``false``). Its settings (``grad_repeats``,
``truncate``, ``fcd_weight``, ``fcd_bandwidth``, ``noise``, ``grad_duration``, ...) are settings of
this family, so an experiment YAML sets them under ``settings:``.

Explore, then refine (TVB-Optim's recommended practice) inside the one family: with
``explore: {name: random|grid|cmaes|..., evaluations: M, population: p, settings: {...}}`` the
optimizer first delegates ask/tell to that coarse optimizer until M candidates were told (or it is
done), then starts ``refine_top`` = K Adam iterates at the K best told candidates (lowest told loss,
earliest first among ties; :attr:`refine_starts`); the first refine ask is already one Adam step
from each (their told losses are the iterates' first bests).

Checkpoints: :meth:`state` pickles everything except ``loss_fn`` (a closure over JAX objects is
not picklable); after :meth:`Optimizer.from_state` call :meth:`attach` (or
:meth:`attach_objective`, as the Tune trainable does) with the loss again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .base import Optimizer, SettingError, require

__all__ = ["GradientDescent", "refine", "adam_fit", "FitResult"]


class GradientDescent(Optimizer):
    """Multi-start projected Adam (see the module docstring)."""

    name = "gradient"
    modes = ("population",)  # it differentiates the run's objective (attach_objective): no trial-mode form
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
        # explore-then-refine
        "explore": None,        # {name, evaluations, population, settings}: a coarse search first
        "refine_top": 1,        # K: Adam iterates started at the K best told explore candidates
        # the differentiable loss built by attach_objective (raybrain.losses.differentiable.ObjectiveLoss)
        "grad_repeats": None,   # fixed noise realisations per gradient (None: simulation.repeats)
        "resample": True,       # fresh fixed noise each Adam step (stochastic gradient of E[loss])
        "noise": "raybrain",    # "raybrain" (the simulator's own counter-based noise) or "jax"
        "truncate": None,       # truncated BPTT: cut the gradient every this many TRs
        "grad_burn_in": False,  # differentiate through the burn-in too
        "checkpoint": True,     # jax.checkpoint each TR (memory O(T) in the backward pass)
        "corr_weight": None,    # 1 - r(FC) weight (None: from the objective's loss)
        "mean_weight": None,    # |mean FC difference| weight (None: from the loss)
        "mse_weight": 0.0,      # mean squared FC difference weight
        "fcd_weight": None,     # smoothed-KS FCD weight (None: from the loss; 0 drops the FCD)
        "fcd_bandwidth": 0.05,  # h of the smoothed KS (losses.differentiable.soft_ks)
        "fcd_points": 256,      # k-point grid on [-1, 1]; None: pooled midpoints (exact KS as h -> 0)
        "grad_dtype": "float64",
        "grad_duration": None,  # simulated seconds of the differentiable run (None: the objective's)
        "grad_dt": None,        # its time step (None: the objective's)
    }
    #: settings passed to raybrain.losses.differentiable.ObjectiveLoss (setting name -> argument name)
    _LOSS_ARGS = {"noise": "noise", "truncate": "truncate", "grad_burn_in": "grad_burn_in",
                  "checkpoint": "checkpoint", "corr_weight": "corr_weight", "mean_weight": "mean_weight",
                  "mse_weight": "mse_weight", "fcd_weight": "fcd_weight", "fcd_bandwidth": "fcd_bandwidth",
                  "fcd_points": "fcd_points", "grad_dtype": "dtype", "grad_duration": "duration", "grad_dt": "dt"}

    @classmethod
    def check_experiment(cls, experiment) -> None:
        """It differentiates the FC loss of BOLD simulations: a spectral loss is refused."""
        if experiment.spectral:
            name = experiment.loss if isinstance(experiment.loss, str) else "spectral"
            raise SettingError("name", f"the gradient family differentiates the FC loss of BOLD simulations; it "
                               f"cannot fit loss {name!r}")

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
        self._inner = None
        self._stage = "refine"
        self.refine_starts = None
        if st["explore"] is not None:
            self._setup_explore(st)
            return
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
        self._start(starts)
        self._vg = None
        self._loss_fn = st.pop("loss_fn", None)
        st["loss_fn"] = None  # keep the settings picklable; the function lives in _loss_fn

    def _start(self, starts, best=None) -> None:
        """Adam iterates at ``starts`` (K, P); ``best``: their known told losses (explore)."""
        starts = np.asarray(starts, dtype=np.float64)
        if not np.all(np.isfinite(starts)):
            raise ValueError("gradient: starting points must be finite")
        self._u = np.clip(self.to_unit(starts), 0.0, 1.0)
        self._m1 = np.zeros_like(self._u)
        self._m2 = np.zeros_like(self._u)
        self._t = np.zeros(len(self._u), dtype=np.int64)
        self._best = np.full(len(self._u), np.inf) if best is None else np.asarray(best, np.float64).copy()
        self._stale = np.zeros(len(self._u), dtype=np.int64)
        self._active = np.ones(len(self._u), dtype=bool)
        self._asked_once = best is not None  # explore: the starts were evaluated already
        self.last_grad_norm = np.full(len(self._u), np.nan)
        self.population = len(self._u)

    def _setup_explore(self, st) -> None:
        from . import get_optimizer

        ex = st["explore"]
        if not isinstance(ex, dict):
            raise ValueError(f"gradient: explore must be a mapping {{name, evaluations, population, settings}}, "
                             f"got {ex!r}")
        unknown = sorted(set(ex) - {"name", "evaluations", "population", "settings"})
        if unknown:
            raise ValueError(f"gradient: unknown key {unknown[0]!r} in explore (accepted: name, evaluations, "
                             f"population, settings)")
        if "name" not in ex or ex["name"] == "gradient":
            raise ValueError(f"gradient: explore.name must name a coarse optimizer family (random, grid, cmaes, "
                             f"...), got {ex.get('name')!r}")
        m = ex.get("evaluations")
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(f"gradient: explore.evaluations must be a positive integer, got {m!r}")
        k = st["refine_top"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
            raise ValueError(f"gradient: refine_top must be an integer in [1, explore.evaluations = {m}], got {k!r}")
        if st["x0"] is not None or st["refine_from"] is not None:
            raise ValueError("gradient: explore picks the starting points; do not also give x0 or refine_from")
        inner_settings = dict(ex.get("settings") or {})
        self._inner = get_optimizer(ex["name"], self.bounds, seed=self.seed, population=ex.get("population"),
                                    **inner_settings)
        self._stage = "explore"
        self._explore_m = int(m)
        self._told_theta = np.empty((0, self.dim))
        self._told_loss = np.empty(0)
        self.population = self._inner.population
        self._start(self.bounds.mean(axis=1)[None])  # placeholder until the refine stage
        self.population = self._inner.population
        self._vg = None
        self._loss_fn = st.pop("loss_fn", None)
        st["loss_fn"] = None

    def _begin_refine(self) -> None:
        """The K best told explore candidates (stable: the earliest among equal losses) become the
        starting points of K Adam iterates."""
        order = np.argsort(self._told_loss, kind="stable")[:int(self.settings["refine_top"])]
        self.refine_starts = self._told_theta[order].copy()
        self._start(self.refine_starts, best=self._told_loss[order])
        self._stage = "refine"

    # -- loss ------------------------------------------------------------------------------------
    def attach(self, loss_fn: Callable) -> "GradientDescent":
        """(Re)attach the differentiable loss, e.g. after :meth:`from_state`. A loss with the attribute
        ``takes_noise_index = True`` is called as ``loss_fn(theta, k)`` with ``k`` the iterate's Adam step
        (``resample: true``) or 0 (``false``): a new fixed noise realisation per step."""
        self._loss_fn, self._vg = loss_fn, None
        return self

    def attach_objective(self, objective, *, seed: int = 0, repeats: int = 1) -> "GradientDescent":
        """Build and attach :class:`raybrain.losses.differentiable.ObjectiveLoss` of ``objective`` (a
        :class:`raybrain.objective.Objective`): its model, scaled SC, settings and target, noise
        ``seed`` and ``grad_repeats`` (default ``repeats``) realisations, with this family's loss
        settings. ValueError names a parameter that cannot be differentiated. Called by the Tune
        trainable after building or restoring the optimizer."""
        from ..losses.differentiable import ObjectiveLoss

        st = self.settings
        names = tuple(objective.parametrisation.names)
        if len(names) != self.dim:
            raise ValueError(f"gradient: the objective has {len(names)} parameters {list(names)}, the optimizer "
                             f"{self.dim}")
        r = st["grad_repeats"] if st["grad_repeats"] is not None else repeats
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"gradient: grad_repeats must be a positive integer, got {r!r}")
        kw = {arg: st[key] for key, arg in self._LOSS_ARGS.items()}
        return self.attach(ObjectiveLoss(objective, seed=int(seed), repeats=int(r), **kw))

    def _value_and_grad(self):
        if self._loss_fn is None:
            raise ValueError("gradient: needs a differentiable loss: pass loss_fn=... (a function of theta (P,) "
                             "returning a scalar; see raybrain.losses.differentiable.vector_loss), or attach() one")
        if self._vg is None:
            jax = require("jax", "jax")
            vg = jax.value_and_grad(self._loss_fn, argnums=0)
            self._vg = jax.jit(vg) if self.settings["jit"] else vg
        return self._vg

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_vg"] = None
        d["_loss_fn"] = None
        return d

    # -- ask / tell ------------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        """``"explore"`` (delegating to the coarse optimizer) or ``"refine"`` (Adam)."""
        return self._stage

    @property
    def done(self) -> bool:
        mg = self.settings["max_generations"]
        if mg is not None and self.generation >= mg:
            return True
        if self._stage == "explore":
            return False
        return not self._active.any()

    def _ask_physical(self) -> np.ndarray:
        if self._stage == "explore":
            left = self._explore_m - len(self._told_loss)
            if left > 0 and not self._inner.done:
                theta = self._inner.ask()[:left]
                self.population = len(theta)
                return theta
            self._begin_refine()
        if self._asked_once:
            import jax.numpy as jnp

            vg = self._value_and_grad()
            b1, b2 = self.settings["betas"]
            lr, decay, eps = self.settings["lr"], self.settings["lr_decay"], self.settings["eps"]
            span = self.bounds[:, 1] - self.bounds[:, 0]
            noisy = bool(getattr(self._loss_fn, "takes_noise_index", False))
            for k in np.flatnonzero(self._active):
                for _ in range(int(self.settings["inner_steps"])):
                    theta = self.from_unit(self._u[k])
                    if noisy:
                        idx = int(self._t[k]) if self.settings["resample"] else 0
                        _, g = vg(jnp.asarray(theta), idx)
                    else:
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
        if self._stage == "explore":
            theta = self._pending[index]
            self._inner.tell(theta, losses)
            self._told_theta = np.concatenate([self._told_theta, theta])
            self._told_loss = np.concatenate([self._told_loss, losses])
            return
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


# ----------------------------------------------------------------------------------------------
# projected Adam on a parameter pytree
# ----------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """Outcome of :func:`adam_fit`: ``theta`` (the best iterate by loss), ``loss`` there, the
    per-iteration ``history`` (dicts with ``loss``, ``theta``, ``grad_norm``), ``wall_s``."""

    theta: dict
    loss: float
    history: list = field(default_factory=list)
    wall_s: float = 0.0
    final_theta: dict | None = None


def adam_fit(loss_fn: Callable, theta0: Mapping[str, Any], bounds: Mapping[str, tuple], *, steps: int = 50,
             lr: float = 0.05, lr_decay: float = 1.0, betas=(0.9, 0.999), eps: float = 1e-8, jit: bool = True,
             callback: Callable | None = None, tol: float | None = None) -> FitResult:
    """Projected Adam on ``loss_fn(theta) -> scalar`` over a parameter pytree (dict of arrays).

    Each leaf is optimised in its unit box ``u = (θ − lo)/(hi − lo)`` (``bounds[name] = (lo, hi)``,
    scalars or arrays broadcastable to the leaf), so ``lr`` is a fraction of each range; after each
    step ``u`` is clipped to [0, 1]; the step size of iteration t is ``lr · lr_decay**t``. Non-finite
    gradients skip the step (the moments are kept). Returns the best iterate seen (its loss is that of the iterate *before* the step).
    """
    jax = require("jax", "jax")
    import jax.numpy as jnp

    names = list(theta0)
    missing = [k for k in names if k not in bounds]
    if missing:
        raise ValueError(f"no bounds for fitted parameter {missing[0]!r}")
    lo = {k: np.broadcast_to(np.asarray(bounds[k][0], np.float64), np.shape(theta0[k])) for k in names}
    hi = {k: np.broadcast_to(np.asarray(bounds[k][1], np.float64), np.shape(theta0[k])) for k in names}
    span = {k: hi[k] - lo[k] for k in names}
    if any(np.any(span[k] <= 0) for k in names):
        raise ValueError("every bound needs lo < hi")
    vg = jax.value_and_grad(loss_fn)
    if jit:
        vg = jax.jit(vg)
    u = {k: np.clip((np.asarray(theta0[k], np.float64) - lo[k]) / span[k], 0.0, 1.0) for k in names}
    m1 = {k: np.zeros_like(u[k]) for k in names}
    m2 = {k: np.zeros_like(u[k]) for k in names}
    b1, b2 = betas
    best, best_loss, history = None, np.inf, []
    t0 = time.perf_counter()
    t_adam = 0
    for it in range(int(steps)):
        theta = {k: lo[k] + span[k] * u[k] for k in names}
        val, g = vg({k: jnp.asarray(v) for k, v in theta.items()})
        val = float(val)
        g = {k: np.asarray(g[k], np.float64) * span[k] for k in names}  # d loss / d u
        gn = float(np.sqrt(sum(np.sum(gi * gi) for gi in g.values())))
        history.append({"iteration": it, "loss": val, "grad_norm": gn,
                        "theta": {k: np.array(v, copy=True) for k, v in theta.items()}})
        if callback is not None:
            callback(history[-1])
        if np.isfinite(val) and val < best_loss:
            best_loss, best = val, {k: np.array(v, copy=True) for k, v in theta.items()}
        if tol is not None and gn < tol:
            break
        if not np.isfinite(gn):
            continue
        t_adam += 1
        for k in names:
            m1[k] = b1 * m1[k] + (1 - b1) * g[k]
            m2[k] = b2 * m2[k] + (1 - b2) * g[k] ** 2
            mh = m1[k] / (1 - b1 ** t_adam)
            vh = m2[k] / (1 - b2 ** t_adam)
            u[k] = np.clip(u[k] - lr * lr_decay ** it * mh / (np.sqrt(vh) + eps), 0.0, 1.0)
    final = {k: lo[k] + span[k] * u[k] for k in names}
    if best is None:
        best = final
    return FitResult(best, float(best_loss), history, time.perf_counter() - t0, final)
