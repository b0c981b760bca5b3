r"""The simulator on JAX: raybrain's Euler–Maruyama loop, differentiable end to end.

Griffiths et al. 2022 (whole-brain model fitting by gradient descent, *NeuroImage* 262:119563)
and TVB-Optim (2025) fit neural-mass models to FC by back-propagating through the integrator.
:class:`JaxSimulator` runs the loop of the reference array path
(:meth:`raybrain.integrate.Simulation._run_array`) on ``jax.numpy`` arrays inside
``jax.lax.scan``, so ``jax.grad`` differentiates a BOLD-derived loss with respect to any model
parameter or the connectome. JAX is one more array module (:func:`raybrain._backend.array_module`
recognises JAX arrays and tracers); nothing of the physics is written here:

* drift: the model's own :meth:`~raybrain.models.Model.drift_and_observables` (its scalar
  declaration over arrays, with :mod:`raybrain.models.maths` dispatching on the array module);
* parameters: the model's :meth:`~raybrain.models.Model.prepare` (e.g. rWW's analytic FIC) with
  ``xp=jax.numpy``, in float64, and the start at its :meth:`~raybrain.models.Model.fixed_point`
  when it has one, as :meth:`raybrain.integrate.Simulation.initial_state`;
* noise: :func:`raybrain.random.normal_pair` on uint64 JAX keys — the same keys and counters, so
  a run equals ``Simulation(...)`` with the same seed and streams;
* hemodynamics: :func:`raybrain.hemodynamics.bw_derivatives` and
  :func:`~raybrain.hemodynamics.bold_signal` with the simulation's precision split (right-hand
  sides in its dtype, state in float64), started at
  :meth:`~raybrain.hemodynamics.BalloonWindkessel.initial_state`;
* sampling: :func:`raybrain.integrate.sample_plan`, the TR grid every path follows.

The time loop is three nested scans, TRs ⊃ hemodynamic steps ⊃ neural steps, with the array
path's order of operations (drift, noise, clipping, input averaged over each hemodynamic step,
a sample every TR once the burn-in has passed).

Noise (the gradient is that of the loss at *fixed* noise; averaging over ``repeats`` fixed
realisations estimates the gradient of the expected loss):

* ``noise="raybrain"`` (default): the counter-based generator of :mod:`raybrain.random`
  evaluated inside the scan, nothing pre-drawn. It hashes uint64 counters, so it needs
  ``jax_enable_x64``.
* ``noise="jax"``: ``jax.random.normal(fold_in(key(seed·1000003 + stream), step))`` — JAX's own
  generator, a different realisation, for float32 JAX without x64.

Memory. Reverse-mode AD stores the scan carries. With ``checkpoint=True`` (default) each TR's
body is wrapped in ``jax.checkpoint``: the backward pass keeps only the state at every TR
(O(T_bold · R · N)) and recomputes one TR at a time. ``truncate=W`` additionally cuts the
gradient every ``W`` TRs (``stop_gradient`` of the state between windows: truncated
back-propagation through time), which bounds the cost of long runs and of the exploding
sensitivities of long unstable trajectories, at the price of a biased gradient.

Parameters are a *pytree* (a dict): any model parameter name, as a scalar (global, e.g. ``G``,
``sigma``) or an ``(N,)`` array (regional, e.g. ``w_EE``), and optionally ``"sc"``, a full
``(N, N)`` connectome. A parameter can be fitted when the derivative JAX takes through
``prepare`` is the derivative of ``prepare``: a root solve by bisection (rWW's FIC) has the
right value but not the right derivative in the parameters of the equation it solves, and a
parameter that ``prepare`` overwrites (FIC's ``w_IE``) has none. :meth:`JaxSimulator.model_params`
refuses such parameters, found by comparing the JAX directional derivative of ``prepare`` with a
central difference of the NumPy ``prepare`` (:meth:`JaxSimulator.fittable`).

JAX is an optional dependency (``pip install 'raybrain[jax]'``); importing this module without it
works, building a simulator raises ImportError.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np

from .hemodynamics import bold_signal, bw_derivatives
from .integrate import SimulationSettings, euler_maruyama_step, sample_plan
from .models import get_model
from .random import keys_of_streams, normal_pair, seed_base, stream_keys

__all__ = ["require_jax", "JaxSimulator"]

#: relative tolerance of the check of ``prepare``'s JAX derivative against a central difference
_PREPARE_RTOL = 1e-4


def require_jax():
    """Import jax, or ImportError naming the optional extra."""
    try:
        import jax  # noqa: F401
        import jax.numpy  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("gradient-based fitting needs JAX: pip install 'raybrain[jax]' "
                          f"(or pip install jax jaxlib) ({exc})") from exc
    return jax


def _doc_line(fn) -> str:
    return ((getattr(fn, "__doc__", None) or "").strip().splitlines() or [""])[0]


class JaxSimulator:
    """Differentiable BOLD simulation of ``model`` on ``sc`` (see the module docstring).

    Parameters
    ----------
    model : Model or str
    sc : (N, N) connectome (used as given, ``C_ij`` from j to i); the default when the parameter
        pytree has no ``"sc"``.
    settings : SimulationSettings
        ``dt``, ``bold_dt``, ``tr``, ``burn_in``, ``duration``, ``hemodynamics``, BW constants,
        ``seed``, ``dtype`` are honoured (``backend``/``fused`` are not used).
    params : mapping, optional
        Fixed (non-fitted) model parameters, scalars or (N,) arrays; defaults from the model.
    repeats : int
        R noise realisations run as a batch (streams ``first_stream + arange(R)``, as
        :meth:`raybrain.objective.Objective.simulation` numbers a single candidate's repeats).
    noise : "raybrain" | "jax"
    checkpoint : bool
        ``jax.checkpoint`` each TR (memory O(T_bold) instead of O(n_steps) in the backward pass).
    truncate : int, optional
        Cut the gradient every ``truncate`` TRs (truncated BPTT).
    grad_burn_in : bool
        False: cut the gradient at the end of the burn-in (the state there is treated as given:
        cheap, and right for stationary statistics once the start is forgotten; the burn-in's
        forward pass still runs). True (default): the exact gradient of the whole run.

    :meth:`bold` maps a parameter pytree to BOLD ``(R, T, N)``.
    """

    def __init__(self, model, sc, settings: SimulationSettings | None = None, params: Mapping[str, Any] | None = None,
                 *, repeats: int = 1, first_stream: int = 0, streams=None, noise: str = "raybrain",
                 checkpoint: bool = True, truncate: int | None = None, grad_burn_in: bool = True):
        jax = require_jax()
        import jax.numpy as jnp

        self.model = get_model(model)
        s = settings or SimulationSettings()
        if s.hemodynamics is None:
            s = s.replace(hemodynamics=getattr(self.model, "default_hemodynamics", "balloon"))
        self.settings = s
        if noise not in ("raybrain", "jax"):
            raise ValueError(f"noise must be 'raybrain' or 'jax', got {noise!r}")
        self.x64 = x64 = bool(jax.config.jax_enable_x64)
        if noise == "raybrain" and not x64:
            raise ValueError("noise='raybrain' needs 64-bit JAX: jax.config.update('jax_enable_x64', True) "
                             "before building the simulator, or use noise='jax'")
        if s.dtype == "float64" and not x64:
            raise ValueError("dtype float64 needs jax.config.update('jax_enable_x64', True)")
        self.noise = noise
        self.dtype = jnp.float64 if s.dtype == "float64" else jnp.float32
        # parameters are prepared, and the Balloon state kept, in float64 (as Simulation.params_host
        # and Simulation.hemo_dtype on the CPU) where JAX has it
        self.wide = jnp.float64 if x64 else jnp.float32
        sc = np.asarray(sc, dtype=np.float64)
        if sc.ndim != 2 or sc.shape[0] != sc.shape[1]:
            raise ValueError(f"sc must have shape (N, N), got {sc.shape}")
        self.sc = sc
        self.n = sc.shape[0]
        R = int(repeats)
        if R < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = R
        streams = np.arange(first_stream, first_stream + R) if streams is None else np.asarray(streams)
        if streams.shape != (R,):
            raise ValueError(f"streams must have shape ({R},), got {streams.shape}")
        self.streams = streams
        self.keys_np = stream_keys(s.seed, streams)
        self.fixed = {k: np.asarray(v, dtype=np.float64) for k, v in self.model.params(**dict(params or {})).items()}
        self.checkpoint = bool(checkpoint)
        if truncate is not None and (isinstance(truncate, bool) or int(truncate) < 1):
            raise ValueError(f"truncate must be None or a positive number of TRs, got {truncate!r}")
        self.truncate = None if truncate is None else int(truncate)
        self.grad_burn_in = bool(grad_burn_in)
        # the TR grid of a fresh run (Simulation.run from step 0: burn-in, then the duration)
        total = s.n_steps(s.burn_in) + s.n_steps(s.duration)
        self.k_h, self.k_tr, self.m_burn, ms = sample_plan(s, 0, total)
        self.n_tr = total // (self.k_h * self.k_tr)  # whole TRs; the steps after the last sample make no BOLD
        self.n_samples = len(ms)
        self.first_sample = self.n_tr - self.n_samples  # TR blocks before the first sample
        if self.n_samples < 2:
            raise ValueError(f"the run gives {self.n_samples} BOLD sample(s) after the burn-in; need >= 2")
        self.times = ms * (self.k_h * s.dt)
        self._fittable: dict[str, str | None] = {}

    # -- parameters ----------------------------------------------------------------------------
    def _shaped(self, theta: Mapping[str, Any], xp, dtype):
        """Fixed parameters overridden by ``theta`` as ``(1, N)`` arrays, and the connectome."""
        C = xp.asarray(theta["sc"], dtype) if "sc" in theta else xp.asarray(self.sc, dtype)
        p = {k: xp.broadcast_to(xp.asarray(theta[k] if k in theta else v, dtype), (1, self.n))
             for k, v in self.fixed.items()}
        return p, C

    def fittable(self, name: str) -> str | None:
        """None if parameter ``name`` (or ``"sc"``) can be differentiated, else the reason.

        Checked once per name, at the fixed parameters: the JAX directional derivative of the
        model's ``prepare`` along ``name`` (every region at once; for ``"sc"`` along the row sums)
        must equal a central difference of the NumPy ``prepare`` in every prepared parameter, to
        relative tolerance 1e-4 (a bisection's derivative is off by O(1)), and ``prepare`` must not
        discard the parameter (a derivative of zero everywhere)."""
        if name in self._fittable:
            return self._fittable[name]
        import jax
        import jax.numpy as jnp

        p0 = {k: np.broadcast_to(v, (1, self.n)).astype(np.float64) for k, v in self.fixed.items()}
        rs0 = self.sc.sum(axis=1)[None, :]
        m = self.model

        def split(p, rs, v):
            if name == "sc":
                return p, rs + v
            return {**p, name: p[name] + v}, rs

        def f_np(v):
            return m.prepare(*split(p0, rs0, v), xp=np)

        def f_jax(v):
            return m.prepare(*split({k: jnp.asarray(a, self.wide) for k, a in p0.items()}, jnp.asarray(rs0, self.wide),
                                    v), xp=jnp)

        ref = np.abs(rs0) if name == "sc" else np.abs(p0[name])
        h = 1e-6 * max(float(ref.max()), 1e-3)
        with jax.ensure_compile_time_eval(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype")
            _, tangent = jax.jvp(f_jax, (jnp.zeros((1, self.n), self.wide),), (jnp.ones((1, self.n), self.wide),))
        up, down = f_np(h), f_np(-h)
        reason, moved = None, False
        rtol = _PREPARE_RTOL if self.x64 else 1e-2
        for k in tangent:
            t = np.asarray(tangent[k], np.float64)
            fd = (np.asarray(up[k], np.float64) - np.asarray(down[k], np.float64)) / (2 * h)
            scale = max(float(np.abs(fd).max()), float(np.abs(t).max()))
            moved = moved or scale > 0
            if not np.all(np.abs(t - fd) <= rtol * scale + 1e-12):
                reason = f"its derivative through the model's prepare() is not that of prepare() (in {k!r})"
                break
        if reason is None and not moved:
            reason = "the model's prepare() overrides it"
        if reason is not None:
            reason = f"cannot fit {name!r}: {reason} [prepare(): {_doc_line(type(m).prepare)}]; hold it fixed"
        self._fittable[name] = reason
        return reason

    def _prepared(self, theta: Mapping[str, Any]):
        """``(p, C)``: the parameters of ``theta`` over the fixed ones, prepared by the model in
        float64 where JAX has it (``(1, N)`` arrays), and the connectome in the simulation's dtype."""
        import jax
        import jax.numpy as jnp

        theta = dict(theta)
        unknown = [k for k in theta if k != "sc" and k not in self.fixed]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} for model {self.model.name!r}")
        for k in theta:
            reason = self.fittable(k)
            if reason is not None:
                raise ValueError(reason)
        # what depends on fixed parameters only (e.g. FIC's root solve) is computed now, not traced
        with jax.ensure_compile_time_eval(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype")  # float64 on 32-bit JAX
            p, C = self._shaped(theta, jnp, self.wide)
            p = {k: jnp.asarray(v) for k, v in self.model.prepare(p, jnp.sum(C, axis=1)[None, :], xp=jnp).items()}
        return p, C.astype(self.dtype)

    def model_params(self, theta: Mapping[str, Any]):
        """Fixed parameters overridden by ``theta``, prepared (e.g. FIC), as JAX arrays ``(1, N)`` in
        the simulation's dtype; returns ``(p, C)``. ValueError names an unknown parameter or one
        that cannot be differentiated (:meth:`fittable`)."""
        p, C = self._prepared(theta)
        return {k: v.astype(self.dtype) for k, v in p.items()}, C

    # -- simulation ----------------------------------------------------------------------------
    def _keys_jax(self, noise_index):
        """uint64 keys of streams ``self.streams + noise_index · R`` (``noise_index`` may be traced:
        no recompilation), by :func:`raybrain.random.keys_of_streams`, the formula of
        :func:`raybrain.random.stream_keys`."""
        import jax.numpy as jnp

        u64 = jnp.uint64
        s = jnp.asarray(self.streams, u64) + jnp.asarray(noise_index, u64) * u64(self.repeats)
        return keys_of_streams(seed_base(self.settings.seed), s)

    def _noise(self, noise_index):
        """``draw(step, q)``: the q-th normal pair ``(R, N)`` of neural step ``step``."""
        import jax
        import jax.numpy as jnp

        s, n, dt_ = self.settings, self.n, self.dtype
        n_pairs = (len(self.model.noise_variables) + 1) // 2
        if self.noise == "raybrain":
            keys = jnp.asarray(self.keys_np, jnp.uint64) if noise_index is None else self._keys_jax(noise_index)

            def draw(step, q):
                return normal_pair(keys, step * n_pairs + q, n, dt_)
            return draw
        base = jnp.stack([jax.random.PRNGKey(int(s.seed) * 1_000_003 + int(st)) for st in self.streams])
        if noise_index is not None:
            base = jax.vmap(lambda k: jax.random.fold_in(k, jnp.asarray(noise_index, jnp.uint32)))(base)

        def draw(step, q):
            z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step * n_pairs + q), (2, n), dt_))(base)
            return z[:, 0], z[:, 1]
        return draw

    def initial_state(self, p_wide, C):
        """Neural and hemodynamic state ``(R, N)`` at t = 0, as :meth:`Simulation.initial_state`: the
        model's fixed point (clipped) where it has one, else each variable's ``initial``; the Balloon
        at the steady state of its initial input."""
        import jax.numpy as jnp

        m, s, R, n, dt_ = self.model, self.settings, self.repeats, self.n, self.dtype
        fp = m.fixed_point(p_wide, jnp.sum(C.astype(self.wide), axis=1)[None, :], xp=jnp)
        if fp is None:
            neural = m.initial_state(R, n, xp=jnp, dtype=dt_)
        else:
            clips = [sv.clip or (-np.inf, np.inf) for sv in m.state_variables]
            neural = tuple(jnp.clip(jnp.broadcast_to(a, (R, n)), *c).astype(dt_) for a, c in zip(fp, clips))
        x0 = neural[m.bold_input] if s.hemodynamics == "balloon" else None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype")
            hemo = s.hemodynamic_model.initial_state(R, n, xp=jnp, dtype=self.wide, x=x0)
        return neural, hemo

    def bold(self, theta: Mapping[str, Any], noise_index=None):
        """BOLD ``(R, T, N)`` of parameter pytree ``theta`` (differentiable).

        ``noise_index`` (an int, may be a traced JAX integer): use the noise streams
        ``streams + noise_index · R`` instead of ``streams`` — a fresh fixed noise realisation per
        optimisation step without recompiling. None (default) and 0 are the streams given."""
        import jax
        import jax.numpy as jnp
        from jax import lax

        s, m, n, R, dt_ = self.settings, self.model, self.n, self.repeats, self.dtype
        dtp = np.dtype(dt_).type
        p_wide, C = self._prepared(theta)
        p = {k: v.astype(dt_) for k, v in p_wide.items()}
        dt = dtp(s.dt)
        amp = p["sigma"] * dtp(math.sqrt(s.dt))
        k_h, k_tr = self.k_h, self.k_tr
        kappa, gam_h, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = s.hemodynamic_model.coefficients(dtp)
        balloon = s.hemodynamics == "balloon"
        n_pairs = (len(m.noise_variables) + 1) // 2
        draw = self._noise(noise_index)
        Ct = C.T

        def neural_step(carry, step):
            x, acc = carry
            coupling = tuple(x[v] @ Ct for v in m.coupled_variables)
            xi = []
            for q in range(n_pairs):
                xi.extend(draw(step, q))
            new, _ = euler_maruyama_step(m, x, p, coupling, xi, dt, amp, jnp)
            if balloon:
                acc = acc + new[m.bold_input]
            return (tuple(new), acc), None

        def hemo_step(carry, mstep):  # mstep: index of this hemodynamic step (0-based)
            x, hemo = carry
            (x, acc), _ = lax.scan(neural_step, (x, jnp.zeros((R, n), dt_)), mstep * k_h + jnp.arange(k_h))
            if balloon:  # right-hand sides in the simulation's dtype, increments into the wide state
                h = tuple(a.astype(dt_) for a in hemo)
                d = bw_derivatives(*h, acc * dtp(1.0 / k_h), kappa, gam_h, inv_tau, inv_alpha, l1r, inv_rho, one,
                                   jnp.exp, jnp.log)
                hemo = tuple(a + dtp(k_h * s.dt) * da for a, da in zip(hemo, d))
            return (x, hemo), None

        def tr_step(carry, j):
            cut = None
            if self.truncate is not None:
                cut = (j % self.truncate) == 0
            if not self.grad_burn_in and self.first_sample > 0:
                at = j == self.first_sample
                cut = at if cut is None else (cut | at)
            if cut is not None:
                carry = jax.tree_util.tree_map(lambda a: jnp.where(cut, lax.stop_gradient(a), a), carry)
            (x, hemo), _ = lax.scan(hemo_step, carry, j * k_tr + jnp.arange(k_tr))
            y = bold_signal(hemo[2], hemo[3], V0, k1, k2, k3, one).astype(dt_) if balloon else x[m.bold_input]
            return (x, hemo), y

        body = jax.checkpoint(tr_step) if self.checkpoint else tr_step
        x0, hemo0 = self.initial_state(p_wide, C)
        _, ys = lax.scan(body, (x0, hemo0), jnp.arange(self.n_tr))
        return jnp.swapaxes(ys[self.first_sample:], 0, 1)  # (R, T, N)

    def loss(self, theta: Mapping[str, Any], emp_fc, noise_index=None, **weights):
        """:func:`raybrain.losses.differentiable.fc_loss` of :meth:`bold` against ``emp_fc``,
        averaged over the repeats."""
        from .losses.differentiable import fc_loss

        return fc_loss(self.bold(theta, noise_index), emp_fc, **weights)

