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
over repeats. The FCD KS term (zero gradient almost everywhere) has a documented differentiable
stand-in, :func:`soft_ks`: the KS distance between logistic-smoothed empirical CDFs (bandwidth
``h``; the exact KS statistic as ``h → 0``) of the FCD values (:func:`fcd_distribution`).
:class:`ObjectiveLoss` assembles an :class:`raybrain.objective.Objective`'s loss from these (what
the ``gradient`` optimizer differentiates in experiments; the losses it is *told* and ranks by stay
the objective's real ones).

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
from .random import GOLDEN, _LO32, _S32, _SEED_SALT, _TWO_M32, fmix64, stream_keys

__all__ = ["require_jax", "JaxSimulator", "fc_matrix", "fc_loss", "adam_fit", "FitResult", "vector_loss",
           "fcd_distribution", "soft_ks", "ObjectiveLoss", "GRADIENT_STREAM_OFFSET",
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
    def _keys_jax(self, noise_index):
        """uint64 stream keys of :func:`raybrain.random.stream_keys` computed in JAX for streams
        ``self.streams + noise_index · R`` (``noise_index`` may be traced: no recompilation)."""
        import jax.numpy as jnp

        u64 = jnp.uint64
        with np.errstate(over="ignore"):
            base = fmix64(np.uint64(int(self.settings.seed) & 0xFFFFFFFFFFFFFFFF) ^ _SEED_SALT)
        s = jnp.asarray(self.streams, u64) + jnp.asarray(noise_index, u64) * u64(self.repeats)
        return fmix64(jnp.asarray(base, u64) + (s + u64(1)) * u64(GOLDEN))

    def bold(self, theta: Mapping[str, Any], noise_index=None):
        """BOLD ``(R, T, N)`` of parameter pytree ``theta`` (differentiable).

        ``noise_index`` (an int, may be a traced JAX integer): use the noise streams
        ``streams + noise_index · R`` instead of ``streams`` — a fresh fixed noise realisation per
        optimisation step without recompiling. None (default) and 0 are the streams given."""
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
            keys = jnp.asarray(self.keys_np, jnp.uint64) if noise_index is None else self._keys_jax(noise_index)

            def draw(step, q):
                return _normal_pair_jax(keys, step * n_pairs + q, n, dt_)
        else:
            base = [jax.random.PRNGKey(int(s.seed) * 1_000_003 + int(st)) for st in self.streams]
            base = jnp.stack(base)
            if noise_index is not None:
                base = jax.vmap(lambda k: jax.random.fold_in(k, jnp.asarray(noise_index, jnp.uint32)))(base)

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
        fp = m.fixed_point(p, jnp.sum(C, axis=1)[None, :], xp=jnp, phi=jax_phi) if self._is_rww else None
        x0 = (tuple(jnp.full((R, n), sv.initial, dt_) for sv in m.state_variables) if fp is None else  # as Simulation
              tuple(jnp.clip(jnp.broadcast_to(a, (R, n)), *sv.clip).astype(dt_) for a, sv in zip(fp, m.state_variables)))
        z = jnp.zeros((R, n), dt_)
        hemo0 = (tuple(z + jnp.asarray(a, dt_) for a in s.hemodynamic_model.steady_state(x0[m.bold_input], xp=jnp))
                 if balloon else (z, z + 1, z + 1, z + 1))  # Balloon at the steady state of its initial input
        _, ys = lax.scan(body, (x0, hemo0), jnp.arange(self.n_tr))
        return jnp.swapaxes(ys[self.first_sample:], 0, 1)  # (R, T, N)

    def loss(self, theta: Mapping[str, Any], emp_fc, noise_index=None, **weights):
        """:func:`fc_loss` of :meth:`bold` against ``emp_fc``, averaged over the repeats."""
        return fc_loss(self.bold(theta, noise_index), emp_fc, **weights)


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


# ----------------------------------------------------------------------------------------------
# differentiable FCD and a smoothed KS distance
# ----------------------------------------------------------------------------------------------
def fcd_distribution(bold, window: int, step: int = 1):
    """Upper triangle (k = 1) of the FCD matrix of ``bold`` ``(..., T, N)`` on JAX arrays, *unsorted*:
    ``(..., W(W-1)/2)``. Windows of ``window`` TRs every ``step`` TRs (W = ⌊(T − window)/step⌋ + 1),
    Pearson FC per window, FCD[a, b] = r(upper FC_a, upper FC_b) — as :func:`raybrain.features.fcd`
    (Hansen et al. 2015), without its clipping to [−1, 1] (a no-op up to rounding)."""
    import jax.numpy as jnp

    T, N = bold.shape[-2], bold.shape[-1]
    if window < 2 or step < 1 or window > T:
        raise ValueError(f"FCD window {window} / step {step} do not fit {T} BOLD samples")
    starts = np.arange(0, T - window + 1, step)
    W = len(starts)
    if W < 2:
        raise ValueError(f"an FCD needs >= 2 windows; {T} samples, window {window}, step {step} give {W}")
    idx = starts[:, None] + np.arange(window)[None, :]            # (W, window)
    iu, ju = np.triu_indices(N, 1)
    win = bold[..., idx, :]                                        # (..., W, window, N)
    v = fc_matrix(win)[..., iu, ju]                                # (..., W, M)
    v = v - jnp.mean(v, axis=-1, keepdims=True)
    v = v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
    fcd = v @ jnp.swapaxes(v, -1, -2)                              # (..., W, W)
    a, b = np.triu_indices(W, 1)
    return fcd[..., a, b]


def soft_ks(a, b, bandwidth: float = 0.05, points: int | None = None, kind: str = "ks"):
    r"""Differentiable stand-in for the two-sample KS statistic of sample sets ``a`` (..., Ma) and
    ``b`` (Mb,) (e.g. simulated and empirical FCD values), on JAX arrays.

    The empirical CDFs are smoothed with a logistic kernel of bandwidth ``h``::

        F_h(t; x) = (1/M) Σ_i σ((t − x_i) / h),   σ(z) = 1 / (1 + e^{−z})

    (the CDF of the sample convolved with a logistic density of scale ``h``; Nadaraya 1964), and

        kind="ks":  D_h = max_k |F_h(t_k; a) − F_h(t_k; b)|        (Kolmogorov–Smirnov)
        kind="cvm": D_h = mean_k (F_h(t_k; a) − F_h(t_k; b))²       (Cramér–von Mises-like)

    over evaluation points ``t_k``:

    * ``points=k`` (what :class:`ObjectiveLoss` uses, k = 256 by default): a fixed grid of ``k``
      points on [−1, 1]. ``D_h`` is then a genuine (almost-everywhere) differentiable function of
      the samples, memory O(k·M); as ``h → 0`` it tends to the KS statistic restricted to the grid,
      within the sample mass of one grid cell of the exact value.
    * ``points=None``: the midpoints between consecutive sorted pooled values. As ``h → 0`` each
      ``F_h(t_k)`` tends to the exact empirical CDF at the pooled value below ``t_k``, so ``D_h``
      tends to the exact KS statistic of :func:`raybrain.features.ks_distance` (the known-answer
      test). The points move with the samples; they are held constant for differentiation
      (``stop_gradient``), so the gradient is that of ``D_h`` at the current points. Memory O(M²).

    Unlike the exact KS statistic (piecewise constant in the samples: zero gradient almost
    everywhere) ``D_h`` has a nonzero gradient wherever samples lie within a few ``h`` of the
    maximising point.
    """
    import jax.numpy as jnp
    from jax import lax
    from jax.nn import sigmoid

    if not (bandwidth > 0):
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}")
    if kind not in ("ks", "cvm"):
        raise ValueError(f"kind must be 'ks' or 'cvm', got {kind!r}")
    b = jnp.asarray(b, a.dtype)
    lead = a.shape[:-1]
    bb = jnp.broadcast_to(b, lead + b.shape[-1:])
    if points is None:
        pooled = jnp.sort(lax.stop_gradient(jnp.concatenate([a, bb], axis=-1)), axis=-1)
        t = 0.5 * (pooled[..., 1:] + pooled[..., :-1])                        # (..., K)
    else:
        t = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, int(points), dtype=a.dtype), lead + (int(points),))

    def cdf(x):
        return jnp.mean(sigmoid((t[..., :, None] - x[..., None, :]) / bandwidth), axis=-1)

    d = cdf(a) - cdf(bb)
    if kind == "ks":
        return jnp.max(jnp.abs(d), axis=-1)
    return jnp.mean(d * d, axis=-1)


# ----------------------------------------------------------------------------------------------
# the objective's loss, differentiable
# ----------------------------------------------------------------------------------------------
#: First noise stream of gradient evaluations (far from the candidates' streams 0, 1, 2, ...).
GRADIENT_STREAM_OFFSET = 1 << 40

#: FC/FCD term weights implied by each registered loss (``corr``: 1 − r, ``mean``: |Δ mean FC|,
#: ``fcd``: smoothed KS). ``pmfm`` correlates Fisher-z FCs; its stand-in correlates the plain FCs.
LOSS_WEIGHTS = {"pfic": dict(corr=1.0, mean=1.0, fcd=1.0), "pmfm": dict(corr=1.0, mean=0.0, fcd=1.0),
                "fc_corr": dict(corr=1.0, mean=0.0, fcd=0.0)}


class ObjectiveLoss:
    r"""A differentiable stand-in for an :class:`raybrain.objective.Objective`'s loss, as a function of
    one parameter vector ``theta`` (P,) in the order of ``objective.parametrisation.names``::

        L(θ, k) = (1/R) Σ_r [ w_c (1 − r(FC_r, FC_emp)) + w_m |mean FC_r − mean FC_emp|
                              + w_s mean((FC_r − FC_emp)²) + w_f D_h(FCD_r, FCD_emp) ]

    with BOLD from :class:`JaxSimulator` on the objective's model, scaled SC and settings (seed
    ``seed``; ``dtype``, ``duration``, ``dt`` may be overridden), the parameters mapped by the
    parametrisation's :meth:`~raybrain.parametrisation.Parametrisation.vector_params` on
    ``jax.numpy`` (global, regional and maps parametrisations), ``R = repeats`` fixed noise
    realisations on streams ``GRADIENT_STREAM_OFFSET + k·R + r`` (``k`` = ``noise_index``: a new
    fixed realisation per optimisation step, so that the steps follow a stochastic gradient of the
    *expected* loss; Griffiths 2022, TVB-Optim 2025), and ``D_h`` the smoothed KS distance of
    :func:`soft_ks` (bandwidth ``h``, on ``fcd_points`` grid points; None: the pooled midpoints)
    between the simulated and empirical FCD values. Weights left
    None follow the objective's loss (:data:`LOSS_WEIGHTS`; pfic: 1, 1, 0, 1). For pfic with
    ``h → 0``, ``fcd_points=None`` and a single repeat this is the pfic cost itself; the recorded, ranked losses stay
    those of the real objective.

    ValueError at construction names a parameter that cannot be differentiated (rWW with FIC on:
    the parameters of the FIC root solve), an FCD window that the run is too short for, or a loss
    without a stand-in (only the BOLD losses of :data:`LOSS_WEIGHTS`).
    """

    takes_noise_index = True

    def __init__(self, objective, *, seed: int = 0, repeats: int = 1, noise: str = "raybrain",
                 truncate: int | None = None, checkpoint: bool = True, grad_burn_in: bool = False,
                 corr_weight: float | None = None, mean_weight: float | None = None, mse_weight: float = 0.0,
                 fcd_weight: float | None = None, fcd_bandwidth: float = 0.05, fcd_points: int | None = 256,
                 dtype: str | None = "float64", duration: float | None = None, dt: float | None = None):
        require_jax()
        import jax

        if noise == "raybrain" or dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.objective = objective
        self.par = objective.parametrisation
        self.names = tuple(self.par.names)
        lname = getattr(objective.loss, "name", None)
        if lname not in LOSS_WEIGHTS or getattr(objective, "spectral_part", None) is not None \
                or getattr(objective, "target", None) is None:
            raise ValueError(f"gradient: no differentiable stand-in for the loss {lname or objective.loss!r} "
                             f"(supported: {', '.join(LOSS_WEIGHTS)})")
        w = dict(LOSS_WEIGHTS[lname])
        self.weights = dict(corr_weight=w["corr"] if corr_weight is None else float(corr_weight),
                            mean_weight=w["mean"] if mean_weight is None else float(mean_weight),
                            mse_weight=float(mse_weight))
        self.fcd_weight = w["fcd"] if fcd_weight is None else float(fcd_weight)
        self.fcd_bandwidth, self.fcd_points = float(fcd_bandwidth), fcd_points
        tgt = objective.target
        if self.fcd_weight and not tgt.has_fcd:
            self.fcd_weight = 0.0  # the objective's loss has no FCD term (e.g. fc_corr)
        s = objective.settings.replace(seed=int(seed))
        if dtype is not None:
            s = s.replace(dtype=dtype)
        if duration is not None:
            s = s.replace(duration=float(duration))
        if dt is not None:
            s = s.replace(dt=float(dt))
        self.sim = JaxSimulator(objective.model, objective.sc, s, repeats=int(repeats),
                                first_stream=GRADIENT_STREAM_OFFSET, noise=noise, checkpoint=checkpoint,
                                truncate=truncate, grad_burn_in=grad_burn_in)
        self.emp_fc = np.asarray(tgt.fc, np.float64)
        self.window, self.step = (tgt.window, tgt.step) if self.fcd_weight else (None, None)
        if self.fcd_weight and self.sim.n_samples < self.window + self.step:
            raise ValueError(f"gradient: the differentiable run gives {self.sim.n_samples} BOLD samples, too few "
                             f"for the FCD window {self.window} (step {self.step}); lengthen grad_duration or set "
                             f"fcd_weight: 0")
        # FCDs of equal length (as Objective does): the empirical FCD pooled over segments as long
        # as the differentiable run, or the run cut into segments as long as the shortest recording
        self.segment = None
        self.emp_fcd = None
        if self.fcd_weight:
            self.segment = min(self.sim.n_samples, objective.subject.min_frames or self.sim.n_samples)
            self.emp_fcd = np.asarray(objective.subject.fcd_distribution(self.window, self.step, self.segment),
                                      np.float64)
        # attach-time check that every parameter can be differentiated (FIC, unknown names)
        mid = self.par.bounds.mean(axis=1)
        try:
            self.sim.model_params(self.par.vector_params(mid, np))
        except ValueError as e:
            raise ValueError(f"gradient: cannot differentiate the parametrisation {list(self.names)} of model "
                             f"{self.sim.model.name!r}: {e}") from None

    def params(self, theta):
        """The parameter pytree of vector ``theta`` (P,) (JAX arrays)."""
        import jax.numpy as jnp

        return self.par.vector_params(jnp.asarray(theta), jnp)

    def components(self, theta, noise_index=0):
        """``{"fc": FC terms, "fcd": smoothed KS, "total": L}`` (JAX scalars)."""
        import jax.numpy as jnp

        bold = self.sim.bold(self.params(theta), noise_index)
        fc_part = fc_loss(bold, self.emp_fc, **self.weights)
        out = {"fc": fc_part, "fcd": jnp.zeros((), fc_part.dtype)}
        if self.fcd_weight:
            if bold.shape[-2] > self.segment:
                from .features import segment_starts

                idx = segment_starts(bold.shape[-2], self.segment)[:, None] + np.arange(self.segment)[None, :]
                sim = fcd_distribution(bold[..., idx, :], self.window, self.step)  # (..., k, M_s)
                sim = sim.reshape(sim.shape[:-2] + (-1,))
            else:
                sim = fcd_distribution(bold, self.window, self.step)
            out["fcd"] = jnp.mean(soft_ks(sim, self.emp_fcd, self.fcd_bandwidth, self.fcd_points))
        out["total"] = out["fc"] + self.fcd_weight * out["fcd"]
        return out

    def __call__(self, theta, noise_index=0):
        return self.components(theta, noise_index)["total"]
