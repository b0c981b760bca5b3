r"""Reduced Wong–Wang excitatory–inhibitory model with feedback inhibition control.

Deco, Ponce-Alvarez, Hagmann, Romani, Mantini & Corbetta (2014), J. Neurosci. 34(23):7886,
"How local excitation–inhibition ratio impacts the whole brain dynamics". Per region i
(time in s, rates in Hz, currents in nA):

.. math::

    I^E_i &= W_E I_0 + w^{EE}_i J_{NMDA} S^E_i + G J_{NMDA} \sum_j C_{ij} S^E_j - w^{IE}_i S^I_i \\
    I^I_i &= W_I I_0 + w^{EI}_i J_{NMDA} S^E_i - S^I_i \\
    H(x)  &= \frac{a x - b}{1 - \exp(-d (a x - b))} \qquad r^E = H_E(I^E),\; r^I = H_I(I^I) \\
    dS^E  &= \left(-S^E/\tau_E + (1 - S^E)\,\gamma\, r^E\right) dt + \sigma\, dW^E \\
    dS^I  &= \left(-S^I/\tau_I + r^I\right) dt + \sigma\, dW^I

S^E and S^I are gating probabilities, clipped to [0, 1] after each step (as TVB, cuBNM, FastDMF).
H has a removable singularity at ``a x = b``; it is evaluated as ``phi(z)/d`` with
``phi(z) = z / (1 - exp(-z))``, ``z = d (a x - b)``, using ``-expm1(-z)`` and the series
``1 + z/2 + z^2/12`` for ``|z| < 1e-6`` so no NaN appears at the threshold.

Analytic feedback inhibition control (Demirtas et al. 2019, Neuron 101(6):1181; used by
Zhang et al. 2024 pFIC, DELSSOME, cuBNM): choose ``w_IE`` per region so the fixed point has
``I^E = I^E_* = b_E/a_E - 0.026`` nA (``r^E ≈ 3.06`` Hz):

.. math::

    S^E_* = \frac{\tau_E \gamma r^E_*}{1 + \tau_E \gamma r^E_*},\quad
    I^I_* = W_I I_0 + w^{EI} J_{NMDA} S^E_* - \tau_I H_I(I^I_*),\quad
    S^I_* = \tau_I H_I(I^I_*),

    w^{IE} = \left(W_E I_0 + w^{EE} J_{NMDA} S^E_* + G J_{NMDA} S^E_* \textstyle\sum_j C_{ij} - I^E_*\right) / S^I_*.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .base import Model, Parameter, StateVariable
from .maths import phi

FIC_OFFSET_NA = 0.026  # I_E* = b_E/a_E - 0.026 nA (Deco 2014)


def transfer(current, a, b, d, phi=phi):
    """Population transfer function ``H(x) = (a x - b) / (1 - exp(-d (a x - b)))`` in Hz."""
    return phi(d * (a * current - b)) / d


def currents_and_rates(S_E, S_I, c, G, w_EE, w_EI, w_IE, I0, J_NMDA, W_E, W_I,
                       a_E, b_E, d_E, a_I, b_I, d_I, phi=phi):
    """Synaptic currents (nA) and firing rates (Hz) of both populations.

    Written without numeric literals so that the same function runs on NumPy/CuPy arrays and
    inlined, in the input precision, into the fused numba loop (which passes its own ``phi``).
    """
    JS_E = J_NMDA * S_E
    I_E = W_E * I0 + w_EE * JS_E + G * J_NMDA * c - w_IE * S_I
    I_I = W_I * I0 + w_EI * JS_E - S_I
    r_E = phi(d_E * (a_E * I_E - b_E)) / d_E
    r_I = phi(d_I * (a_I * I_I - b_I)) / d_I
    return I_E, I_I, r_E, r_I


def gating_drift(S_E, S_I, r_E, r_I, tau_E, tau_I, gamma):
    """dS_E/dt, dS_I/dt (1/s) from the rates (Deco 2014); literal-free for the fused path."""
    gr = gamma * r_E
    return -S_E / tau_E + gr - S_E * gr, -S_I / tau_I + r_I


def rww_drift(S_E, S_I, c, G, sigma, w_EE, w_EI, w_IE, I0, J_NMDA, W_E, W_I, a_E, b_E, d_E, a_I, b_I, d_I,
              tau_E, tau_I, gamma, one, phi):
    """The scalar declaration (:attr:`raybrain.models.Model.scalar_drift`): ``(dS_E, dS_I, I_E, I_I,
    r_E, r_I)`` of one region from its gating variables, its network input ``c = Σ_j C_ij S^E_j`` and
    its parameters."""
    I_E, I_I, r_E, r_I = currents_and_rates(S_E, S_I, c, G, w_EE, w_EI, w_IE, I0, J_NMDA, W_E, W_I,
                                            a_E, b_E, d_E, a_I, b_I, d_I, phi)
    dS_E, dS_I = gating_drift(S_E, S_I, r_E, r_I, tau_E, tau_I, gamma)
    return dS_E, dS_I, I_E, I_I, r_E, r_I


class ReducedWongWang(Model):
    """Reduced Wong–Wang E–I model with analytic FIC (Deco 2014; Demirtas 2019)."""

    name = "rww"
    state_variables = (StateVariable("S_E", 0.164757, (0.0, 1.0)), StateVariable("S_I", 0.0327, (0.0, 1.0)))
    coupled_variables = (0,)
    bold_input = 0
    noise_variables = (0, 1)
    summary_observables = ("r_E",)
    scalar_drift = staticmethod(rww_drift)
    scalar_observables = ("I_E", "I_I", "r_E", "r_I")
    kernel_functions = ("phi",)
    searched_parameters = frozenset({"G", "sigma", "w_EE", "w_EI", "w_IE"})  # FIC's w_IE follows G, w_EE
    parameters = (
        Parameter("G", 1.0, "1", (0.0, 3.0), "global coupling (FIC holds up to G ≈ 2.6–2.9 with the SC at "
                  "spectral radius 0.49 or max weight 0.2; raybrain landscape)", regional=False),
        Parameter("sigma", 0.005, "1/sqrt(s)", (0.0005, 0.01), "noise amplitude on S_E and S_I"),
        Parameter("w_EE", 1.4, "1", (1.0, 10.0), "local excitatory recurrence w+ (Deco 2014 default)"),
        Parameter("w_EI", 1.0, "1", (1.0, 5.0), "excitatory-to-inhibitory coupling"),
        Parameter("w_IE", 1.0, "1", (0.0, 10.0), "inhibitory-to-excitatory coupling J_i (set by FIC when on)"),
        Parameter("I0", 0.382, "nA", (0.0, 1.0), "external input current"),
        Parameter("J_NMDA", 0.15, "nA", (0.0, 1.0), "excitatory synaptic coupling"),
        Parameter("W_E", 1.0, "1", (0.0, 2.0), "scaling of external input to E"),
        Parameter("W_I", 0.7, "1", (0.0, 2.0), "scaling of external input to I"),
        Parameter("a_E", 310.0, "1/nC", (0.0, 1e3), "E gain"),
        Parameter("b_E", 125.0, "Hz", (0.0, 1e3), "E threshold"),
        Parameter("d_E", 0.16, "s", (0.0, 1.0), "E curvature"),
        Parameter("a_I", 615.0, "1/nC", (0.0, 1e3), "I gain"),
        Parameter("b_I", 177.0, "Hz", (0.0, 1e3), "I threshold"),
        Parameter("d_I", 0.087, "s", (0.0, 1.0), "I curvature"),
        Parameter("tau_E", 0.1, "s", (1e-3, 1.0), "NMDA decay"),
        Parameter("tau_I", 0.01, "s", (1e-3, 1.0), "GABA decay"),
        Parameter("gamma", 0.641, "1", (0.0, 2.0), "kinetic factor"),
    )

    def __init__(self, fic: bool = True):
        self.fic = bool(fic)

    def __repr__(self) -> str:
        return f"ReducedWongWang(fic={self.fic})"

    @property
    def set_by_prepare(self) -> tuple[str, ...]:
        return ("w_IE",) if self.fic else ()

    def prepare(self, params: Mapping[str, Any], sc_row_sum, xp=np) -> dict[str, Any]:
        """Fill ``w_IE`` from the analytic FIC when ``fic`` is on (needs the SC row sums)."""
        p = dict(params)
        if self.fic:
            p["w_IE"] = fic_w_IE(p, sc_row_sum, xp=xp)
        return p

    def fixed_point(self, p, sc_row_sum, xp=np, phi=phi):
        """With FIC on, the fixed point FIC puts every region at (module docstring): ``S^E_*`` from
        ``I^E_*``, and ``S^I_*`` from the balance of the excitatory current with the network input
        ``G J S^E_* Σ_j C_ij``, ``S^I_* = (W_E I_0 + w^{EE} J S^E_* + G J S^E_* Σ_j C_ij - I^E_*) / w^{IE}``
        (equal to FIC's ``τ_I H_I(I^I_*)`` for the ``w_IE`` it set). A simulation started there has
        no start-up transient. ``None`` with FIC off (no closed form)."""
        if not self.fic:
            return None
        I_Es = fic_target_current(p)
        x = p["tau_E"] * p["gamma"] * transfer(I_Es, p["a_E"], p["b_E"], p["d_E"], phi=phi)
        S_Es = x / (1.0 + x)
        num = p["W_E"] * p["I0"] + p["w_EE"] * p["J_NMDA"] * S_Es + p["G"] * p["J_NMDA"] * S_Es * sc_row_sum - I_Es
        return S_Es, num / p["w_IE"]


def fic_target_current(p: Mapping[str, Any]):
    """``I_E* = b_E/a_E - 0.026`` nA, the excitatory current FIC holds every region at."""
    return p["b_E"] / p["a_E"] - FIC_OFFSET_NA


def fic_w_IE(p: Mapping[str, Any], sc_row_sum, xp=np, iterations: int = 80):
    """Analytic FIC (Demirtas 2019): the ``w_IE`` that puts the fixed point at ``I_E*``.

    Solves ``g(I) = I - W_I I0 - w_EI J S_E* + tau_I H_I(I) = 0`` per region and batch element by
    bisection on the bracket ``[K - tau_I H_I(K), K]`` with ``K = W_I I0 + w_EI J S_E*`` (g is
    increasing because H_I is), which converges to machine precision in 80 halvings.
    Returns an array broadcastable to ``(B, N)``.
    """
    I_Es = fic_target_current(p)
    r_Es = transfer(I_Es, p["a_E"], p["b_E"], p["d_E"])
    x = p["tau_E"] * p["gamma"] * r_Es
    S_Es = x / (1.0 + x)
    K = p["W_I"] * p["I0"] + p["w_EI"] * p["J_NMDA"] * S_Es
    K = xp.asarray(K, dtype=np.float64)

    def H_I(i):
        return transfer(i, p["a_I"], p["b_I"], p["d_I"])

    lo = K - p["tau_I"] * H_I(K)
    hi = K + 0.0 * lo
    lo = lo + 0.0 * hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        g = mid - K + p["tau_I"] * H_I(mid)
        neg = g < 0
        lo = xp.where(neg, mid, lo)
        hi = xp.where(neg, hi, mid)
    I_Is = 0.5 * (lo + hi)
    S_Is = p["tau_I"] * H_I(I_Is)
    num = p["W_E"] * p["I0"] + p["w_EE"] * p["J_NMDA"] * S_Es + p["G"] * p["J_NMDA"] * S_Es * sc_row_sum - I_Es
    return num / S_Is
