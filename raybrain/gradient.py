r"""Gradient-based fitting: automatic differentiation through the simulator and the BOLD model.

Griffiths et al. 2022 (whole-brain model fitting by gradient descent, *NeuroImage* 262:119563)
and TVB-Optim (2025) fit neural-mass models to FC by back-propagating through the integrator.
This module does that for raybrain's **own model definitions**: the pure array functions of the
model (for rWW :func:`raybrain.models.rww.currents_and_rates` and
:func:`~raybrain.models.rww.gating_drift`; for other models ``model.drift``) and of the
hemodynamics (:func:`raybrain.hemodynamics.bw_step`, :func:`~raybrain.hemodynamics.bold_signal`)
are evaluated on ``jax.numpy`` arrays inside ``jax.lax.scan``. Nothing of the physics is
re-written here; only rWW's ``phi`` (the removable-singularity helper, which dispatches on
NumPy/CuPy) gets a ``jax.numpy`` twin, passed through the ``phi=`` argument the model already has
for the fused kernel.

The loop is the reference Euler–Maruyama loop of :meth:`raybrain.integrate.Simulation._run_array`
(same order of operations, clipping, input averaging over each hemodynamic step, sampling every
TR once the burn-in has passed), structured as three nested scans: TRs ⊃ hemodynamic steps ⊃ neural
steps. JAX is an optional dependency (``pip install 'raybrain[jax]'``); importing this module
without it works, building a simulator raises ImportError.

Noise (the gradient is that of the loss at *fixed* noise; averaging over ``repeats`` fixed
realisations gives a usable estimate of the gradient of the expected loss):

* ``noise="raybrain"`` (default): the counter-based generator of :mod:`raybrain.random`
  (``fmix64`` + Box–Muller) evaluated inside the scan on uint64 JAX arrays — bit-for-bit the
  keys and counters of the NumPy path, so a run equals ``Simulation(...)`` with the same seed and
  streams. Needs ``jax_enable_x64`` (uint64); nothing is pre-drawn, memory is independent of
  the run length.
* ``noise="jax"``: ``jax.random.normal(fold_in(key(seed·R + r), step))`` — works in float32.

Memory. Reverse-mode AD stores the scan carries. With ``checkpoint=True`` (default) each TR's
body is wrapped in ``jax.checkpoint``: the backward pass keeps only the state at every TR
(O(T_bold · B · N)) and recomputes one TR at a time. ``truncate=W`` additionally cuts the
gradient every ``W`` TRs (``stop_gradient`` of the state between windows: truncated
back-propagation through time), which bounds the cost of long runs and of the exploding
sensitivities of long unstable trajectories, at the price of a biased gradient.

Parameters are a *pytree* (a dict): any model parameter name, as a scalar (global, e.g. ``G``,
``sigma``) or an ``(N,)`` array (regional, e.g. ``w_EE``), and optionally ``"sc"``, a full
``(N, N)`` connectome. The same code differentiates any combination. With rWW's analytic FIC on,
``w_IE`` is affine in ``w_EE`` and ``G · rowsum(SC)`` (see :func:`raybrain.models.rww.fic_w_IE`):
its coefficients are computed once, in NumPy, by the model's own ``fic_w_IE``, so the fitted
parameters may be ``G``, ``sigma``, ``w_EE`` and ``sc``; fitting the parameters that enter the
FIC root solve (``w_EI``, ``I0``, ...) with FIC on is refused.

Loss (:func:`fc_loss`): ``1 − r(FC_sim, FC_emp)`` over upper triangles plus
``mean_weight · |mean FC_sim − mean FC_emp|`` (the first two terms of the ``pfic`` loss), averaged
over repeats. No differentiable FCD term is provided (the KS statistic has zero gradient almost
everywhere; a smoothed-CDF stand-in is left for later).

Optimisation: projected Adam (Kingma & Ba 2015) in the unit box of each parameter's bounds
(:func:`adam_fit`); written here, no optax dependency.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .hemodynamics import bold_signal, bw_step
from .integrate import SimulationSettings
from .models import get_model
from .models.rww import _SERIES_EPS, fic_w_IE
from .random import GOLDEN, _LO32, _S32, _TWO_M32, fmix64, stream_keys

__all__ = ["require_jax", "JaxSimulator", "fc_matrix", "fc_loss", "adam_fit", "FitResult", "vector_loss",
           "jax_phi", "default_bounds"]

#: Parameters that enter rWW's FIC root solve; they cannot be differentiated with FIC on.
_FIC_FIXED = ("w_EI", "I0", "J_NMDA", "W_E", "W_I", "a_E", "b_E", "d_E", "a_I", "b_I", "d_I",
              "tau_E", "tau_I", "gamma")


def require_jax():
    """Import jax, or ImportError naming the optional extra."""
    try:
        import jax  # noqa: F401
        import jax.numpy  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("gradient-based fitting needs JAX: pip install 'raybrain[jax]' "
                          f"(or pip install jax jaxlib) ({exc})") from exc
    return jax


def jax_phi(z):
    """``z / (1 - exp(-z))`` on JAX arrays; the twin of :func:`raybrain.models.rww.phi`
    (series ``1 + z/2 + z²/12`` for ``|z| < 1e-6``; the double ``where`` keeps gradients finite)."""
    import jax.numpy as jnp

    small = jnp.abs(z) < _SERIES_EPS
    safe = jnp.where(small, 1.0, z)
    exact = safe / (-jnp.expm1(-safe))
    return jnp.where(small, 1.0 + 0.5 * z + z * z / 12.0, exact)


def _normal_pair_jax(keys, step, n: int, dtype):
    """:func:`raybrain.random.normal_pair` on uint64 JAX arrays (needs ``jax_enable_x64``)."""
    import jax.numpy as jnp

    u64 = jnp.uint64
    ctr = (jnp.arange(n, dtype=u64) + jnp.asarray(step, u64) * u64(n)) * u64(GOLDEN)
    z = fmix64(ctr[None, :] ^ keys[:, None])
    u1 = ((z >> u64(_S32)).astype(jnp.float64) + 0.5) * _TWO_M32
    u2 = (z & u64(_LO32)).astype(jnp.float64) * _TWO_M32
    r = jnp.sqrt(-2.0 * jnp.log(u1))
    angle = 2.0 * np.pi * u2
    return (r * jnp.cos(angle)).astype(dtype), (r * jnp.sin(angle)).astype(dtype)


def default_bounds(model, name: str, sc=None):
    """Box ``(lo, hi)`` of a fitted parameter: the model's bounds, or ``[0, 2·max(SC)]`` for ``sc``."""
    model = get_model(model)
    if name == "sc":
        return 0.0, 2.0 * float(np.max(sc))
    return tuple(map(float, model.parameter(name).bounds))


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

    :meth:`bold` maps a parameter pytree to BOLD ``(R, T, N)``; :meth:`loss` to a scalar loss.
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
        x64 = bool(jax.config.jax_enable_x64)
        if noise == "raybrain" and not x64:
            raise ValueError("noise='raybrain' needs 64-bit JAX: jax.config.update('jax_enable_x64', True) "
                             "before building the simulator, or use noise='jax'")
        if s.dtype == "float64" and not x64:
            raise ValueError("dtype float64 needs jax.config.update('jax_enable_x64', True)")
        self.noise = noise
        self.dtype = jnp.float64 if s.dtype == "float64" else jnp.float32
        sc = np.asarray(sc, dtype=np.float64)
        if sc.ndim != 2 or sc.shape[0] != sc.shape[1]:
            raise ValueError(f"sc must have shape (N, N), got {sc.shape}")
        self.sc = sc
        self.n = n = sc.shape[0]
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
        # time grid, as Simulation._sample_plan for a fresh run
        self.k_h, self.k_tr = s.steps_per_bold_step, s.bold_steps_per_tr
        self.m_burn = int(math.ceil(s.burn_in / (self.k_h * s.dt) - 1e-9))
        total = s.n_steps(s.burn_in) + s.n_steps(s.duration)
        self.n_tr = total // (self.k_h * self.k_tr)
        self.first_sample = next((j for j in range(self.n_tr) if (j + 1) * self.k_tr > self.m_burn), self.n_tr)
        self.n_samples = self.n_tr - self.first_sample
        if self.n_samples < 2:
            raise ValueError(f"the run gives {self.n_samples} BOLD sample(s) after the burn-in; need >= 2")
        self.times = (np.arange(self.first_sample, self.n_tr) + 1) * (self.k_tr * self.k_h * s.dt)
        self._is_rww = self.model.name == "rww"
        self._fic = self._is_rww and getattr(self.model, "fic", False)
        if self._fic:
            self._fic_coef = self._fic_coefficients()

    # -- parameters ----------------------------------------------------------------------------
    def _fic_coefficients(self):
        """``w_IE = a0 + slope · (w_EE + G · rowsum)``: a0, slope (N,) from the model's fic_w_IE."""
        p = {k: np.broadcast_to(v, (1, self.n)).astype(np.float64) for k, v in self.fixed.items()}
        zero, one = np.zeros((1, self.n)), np.ones((1, self.n))
        rs = np.zeros((1, self.n))
        a0 = fic_w_IE({**p, "w_EE": zero, "G": zero}, rs)
        a1 = fic_w_IE({**p, "w_EE": one, "G": zero}, rs)
        return np.asarray(a0[0]), np.asarray(a1[0] - a0[0])

    def model_params(self, theta: Mapping[str, Any]):
        """Fixed parameters overridden by ``theta``, prepared (FIC), as JAX arrays (1, N) or scalars;
        returns ``(p, C)``."""
        import jax.numpy as jnp

        theta = dict(theta)
        unknown = [k for k in theta if k != "sc" and k not in self.fixed]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} for model {self.model.name!r}")
        C = jnp.asarray(theta.pop("sc"), self.dtype) if "sc" in theta else jnp.asarray(self.sc, self.dtype)
        p = {}
        for k, v in self.fixed.items():
            val = theta[k] if k in theta else v
            p[k] = jnp.broadcast_to(jnp.asarray(val, jnp.float64 if self.dtype == jnp.float64 else jnp.float32),
                                    (1, self.n))
        row_sum = jnp.sum(C, axis=1)[None, :]
        if self._fic:
            bad = [k for k in theta if k in _FIC_FIXED or k == "w_IE"]
            if bad:
                raise ValueError(f"cannot fit {bad[0]!r} with FIC on (it enters the FIC root solve or is set "
                                 f"by it); fix it, or use get_model('rww', fic=False)")
            a0, slope = self._fic_coef
            p["w_IE"] = a0[None, :] + slope[None, :] * (p["w_EE"] + p["G"] * row_sum)
        elif not self._is_rww:
            p = dict(self.model.prepare(p, row_sum, xp=jnp))
        p = {k: jnp.asarray(v).astype(self.dtype) for k, v in p.items()}
        return p, C

    def _drift(self, x, p, coupling):
        if self._is_rww:
            from .models.rww import currents_and_rates, gating_drift

            S_E, S_I = x
            _, _, r_E, r_I = currents_and_rates(
                S_E, S_I, coupling[0], p["G"], p["w_EE"], p["w_EI"], p["w_IE"], p["I0"], p["J_NMDA"],
                p["W_E"], p["W_I"], p["a_E"], p["b_E"], p["d_E"], p["a_I"], p["b_I"], p["d_I"], phi=jax_phi)
            return gating_drift(S_E, S_I, r_E, r_I, p["tau_E"], p["tau_I"], p["gamma"])
        return self.model.drift(x, p, coupling)

    # -- simulation ----------------------------------------------------------------------------
    def bold(self, theta: Mapping[str, Any]):
        """BOLD ``(R, T, N)`` of parameter pytree ``theta`` (differentiable)."""
        import jax
        import jax.numpy as jnp
        from jax import lax

        s, m, n, R, dt_ = self.settings, self.model, self.n, self.repeats, self.dtype
        p, C = self.model_params(theta)
        dt = jnp.asarray(s.dt, dt_)
        amp = p["sigma"] * jnp.asarray(math.sqrt(s.dt), dt_)
        k_h, k_tr = self.k_h, self.k_tr
        coef = s.hemodynamic_model.coefficients(np.float64)
        kappa, gam_h, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = (jnp.asarray(c, dt_) for c in coef)
        balloon = s.hemodynamics == "balloon"
        clips = [sv.clip for sv in m.state_variables]
        n_pairs = (len(m.noise_variables) + 1) // 2
        if self.noise == "raybrain":
            keys = jnp.asarray(self.keys_np, jnp.uint64)

            def draw(step, q):
                return _normal_pair_jax(keys, step * n_pairs + q, n, dt_)
        else:
            base = [jax.random.PRNGKey(int(s.seed) * 1_000_003 + int(st)) for st in self.streams]
            base = jnp.stack(base)

            def draw(step, q):
                def one_key(k):
                    z = jax.random.normal(jax.random.fold_in(k, step * n_pairs + q), (2, n), dt_)
                    return z
                z = jax.vmap(one_key)(base)  # (R, 2, n)
                return z[:, 0], z[:, 1]

        Ct = C.T

        def neural_step(carry, step):
            x, acc = carry
            coupling = tuple(x[v] @ Ct for v in m.coupled_variables)
            drift = self._drift(tuple(x), p, coupling)
            xi = []
            for q in range(n_pairs):
                xi.extend(draw(step, q))
            new = [a + dt * d for a, d in zip(x, drift)]
            for j, v in enumerate(m.noise_variables):
                new[v] = new[v] + amp * xi[j]
            for v, c in enumerate(clips):
                if c is not None:
                    new[v] = jnp.clip(new[v], c[0], c[1])
            acc = acc + new[m.bold_input]
            return (tuple(new), acc), None

        def hemo_step(carry, mstep):  # mstep: index of this hemodynamic step (0-based)
            x, hemo = carry
            acc0 = jnp.zeros((R, n), dt_)
            steps = mstep * k_h + jnp.arange(k_h)
            (x, acc), _ = lax.scan(neural_step, (x, acc0), steps)
            if balloon:
                hemo = bw_step(*hemo, acc * jnp.asarray(1.0 / k_h, dt_), jnp.asarray(k_h * s.dt, dt_), kappa,
                               gam_h, inv_tau, inv_alpha, l1r, inv_rho, one, jnp.exp, jnp.log)
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
            y = bold_signal(hemo[2], hemo[3], V0, k1, k2, k3, one) if balloon else x[m.bold_input]
            return (x, hemo), y

        body = jax.checkpoint(tr_step) if self.checkpoint else tr_step
        x0 = tuple(jnp.full((R, n), sv.initial, dt_) for sv in m.state_variables)
        z = jnp.zeros((R, n), dt_)
        hemo0 = (z, z + 1, z + 1, z + 1)
        _, ys = lax.scan(body, (x0, hemo0), jnp.arange(self.n_tr))
        return jnp.swapaxes(ys[self.first_sample:], 0, 1)  # (R, T, N)

    def loss(self, theta: Mapping[str, Any], emp_fc, **weights):
        """:func:`fc_loss` of :meth:`bold` against ``emp_fc``, averaged over the repeats."""
        return fc_loss(self.bold(theta), emp_fc, **weights)


# ----------------------------------------------------------------------------------------------
# differentiable features and loss
# ----------------------------------------------------------------------------------------------
def fc_matrix(bold):
    """Pearson FC ``(..., N, N)`` of ``bold`` ``(..., T, N)`` on JAX arrays (as :func:`raybrain.features.fc`,
    without the constant-region NaN guard: a constant region gives NaN, i.e. a non-finite loss)."""
    import jax.numpy as jnp

    x = bold - jnp.mean(bold, axis=-2, keepdims=True)
    cov = jnp.swapaxes(x, -1, -2) @ x
    sd = jnp.sqrt(jnp.sum(x * x, axis=-2))
    return cov / (sd[..., :, None] * sd[..., None, :])


def fc_loss(bold, emp_fc, mean_weight: float = 1.0, corr_weight: float = 1.0, mse_weight: float = 0.0):
    """Differentiable FC cost of BOLD ``(R, T, N)`` or ``(T, N)`` against ``emp_fc`` ``(N, N)``,
    over upper triangles (k = 1) and averaged over the repeats r::

        corr_weight · (1 − r(FC_r, FC_emp)) + mean_weight · |mean FC_r − mean FC_emp|
            + mse_weight · mean((FC_r − FC_emp)²)

    The defaults are the FC terms of the ``pfic`` loss. Note: with finite runs ``1 − r`` keeps
    falling as coupling strengthens (a stronger SC imprint raises r even past the truth), so a
    parameter recovery needs the mean or squared-error term to pin ``G`` (see the tests).
    """
    import jax.numpy as jnp

    emp_fc = jnp.asarray(emp_fc)
    iu, ju = np.triu_indices(emp_fc.shape[-1], 1)
    f = fc_matrix(bold)
    u = f[..., iu, ju]
    v = emp_fc[iu, ju].astype(u.dtype)
    cost = jnp.zeros(u.shape[:-1], u.dtype)
    if corr_weight:
        uc = u - jnp.mean(u, axis=-1, keepdims=True)
        vc = v - jnp.mean(v)
        r = jnp.sum(uc * vc, axis=-1) / jnp.sqrt(jnp.sum(uc * uc, axis=-1) * jnp.sum(vc * vc))
        cost = cost + corr_weight * (1.0 - r)
    if mean_weight:
        cost = cost + mean_weight * jnp.abs(jnp.mean(u, axis=-1) - jnp.mean(v))
    if mse_weight:
        cost = cost + mse_weight * jnp.mean((u - v) ** 2, axis=-1)
    return jnp.mean(cost)


# ----------------------------------------------------------------------------------------------
# Adam
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
    step ``u`` is clipped to [0, 1]; the step size of iteration t is ``lr · lr_decay**t``. Non-finite gradients skip the step (the moments are kept).
    Returns the best iterate seen (its loss is that of the iterate *before* the step).
    """
    require_jax()
    import jax
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


def vector_loss(simulator: JaxSimulator, names, emp_fc, fixed: Mapping[str, Any] | None = None, **weights):
    """A loss of one parameter *vector* ``theta`` (P,) — global parameters ``names`` in order, the
    contract of :mod:`raybrain.search` — for the ``gradient`` optimizer's ``loss_fn``:
    ``fc_loss(simulator.bold({names[i]: theta[i]} ∪ fixed), emp_fc, **weights)``."""
    names = list(names)
    fixed = dict(fixed or {})

    def f(theta):
        return simulator.loss({**fixed, **{n: theta[i] for i, n in enumerate(names)}}, emp_fc, **weights)

    return f
