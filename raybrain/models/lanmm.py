r"""Laminar neural mass model (LaNMM): coupled alpha (deep) and gamma (superficial) generators.

Sanchez-Todo, Bastos, Sola, Mercadal, Santarnecchi, Miller, Deco & Ruffini (2023), NeuroImage
270:119938, "A physical neural mass model framework for the analysis of oscillatory generators from
laminar electrophysiological recordings"; dynamics analysed in de Palma Aristides, Clusella,
Sanchez-Todo, Ruffini & Garcia-Ojalvo (2026), PLoS Comput. Biol. 22(4):e1014022. The Alzheimer's
mechanism (Aβ-impaired PV+ interneurons: weaker PV→P2 inhibition raises gamma and alpha power
early in the disease) follows Sanchez-Todo et al. (2025, LaNMM AD study).

Five populations per region: deep (L5/6) pyramidal ``P1``, spiny stellate ``SS`` and slow
somatostatin interneurons ``SST`` form a Jansen–Rit alpha generator; superficial (L2/3)
pyramidal ``P2`` and fast parvalbumin interneurons ``PV`` form a PING-like gamma generator.
Every synapse is the Jansen–Rit second-order kernel ``h(t) = A a t e^{-a t}``; synapses of
the same type onto the same population are summed (the kernel is linear), giving ten synaptic
groups ``g = (post, type)`` with PSP ``u_g`` (mV):

.. math::

    \ddot u_g = A_g a_g\, R_g(t) - 2 a_g \dot u_g - a_g^2 u_g, \qquad
    R_g = \sum_{\text{pre}} C_{\text{post}\leftarrow\text{pre}}\, \sigma(v_{\text{pre}}) \;(+\,\text{input})

    v_{P1} = u_{P1}^{AMPA} + u_{P1}^{GABA_s},\quad v_{SS} = u_{SS}^{AMPA},\quad v_{SST} = u_{SST}^{AMPA}

    v_{P2} = u_{P2}^{AMPA} + u_{P2}^{GABA_s} + u_{P2}^{GABA_f},\quad
    v_{PV} = u_{PV}^{AMPA} + u_{PV}^{GABA_s} + u_{PV}^{GABA_f}

    \sigma(v) = \frac{2 e_0}{1 + e^{r (v_0 - v)}}

with the inputs

.. math::

    R_{P1}^{AMPA} &= C_{P1\leftarrow SS}\sigma(v_{SS}) + C_{P1\leftarrow P2}\sigma(v_{P2}) + p_1
                    + G \textstyle\sum_j C_{ij} m_j + \xi_1(t) \\
    R_{P1}^{GABA_s} &= C_{P1\leftarrow SST}\sigma(v_{SST}),\quad
    R_{SS}^{AMPA} = C_{SS\leftarrow P1}\sigma(v_{P1}),\quad R_{SST}^{AMPA} = C_{SST\leftarrow P1}\sigma(v_{P1}) \\
    R_{P2}^{AMPA} &= C_{P2\leftarrow P2}\sigma(v_{P2}) + p_2 + \xi_2(t),\quad
    R_{P2}^{GABA_s} = C_{P2\leftarrow SST}\sigma(v_{SST}),\quad R_{P2}^{GABA_f} = C_{P2\leftarrow PV}\sigma(v_{PV}) \\
    R_{PV}^{AMPA} &= C_{PV\leftarrow P2}\sigma(v_{P2}),\quad
    R_{PV}^{GABA_s} = C_{PV\leftarrow SST}\sigma(v_{SST}),\quad R_{PV}^{GABA_f} = C_{PV\leftarrow PV}\sigma(v_{PV})

``ξ_1, ξ_2`` are independent white noises of intensity ``sigma`` (Hz·√s; a per-step Gaussian
input of standard deviation ``s_p`` at step ``dt`` is ``sigma = s_p √dt``) on the pyramidal
populations' AMPA input. Inhibitory gains enter with a negative sign (``A = -A_GABA``).

**Network coupling.** Long-range input is excitatory (AMPA) onto P1 from the P1 firing rates of
the other regions through the SC, scaled by ``G``. Because the integrator couples state variables
linearly, each region carries ``m``, its P1 output rate relayed through a 1 ms first-order filter
(``τ_m \dot m = σ(v_{P1}) - m``; a conduction-delay stand-in far faster than either rhythm).

**State variables** (all ``(B, N)``): for each group ``g`` a PSP and its normalised derivative
``w_g = \dot u_g / (A_g a_g)`` (Hz, so the noise and inputs are in firing-rate units):
``\dot u_g = A_g a_g w_g``, ``\dot w_g = R_g - 2 a_g w_g - a_g u_g / A_g``. The first PSP of
P1 and of P2 is replaced by the membrane potential itself (``v_P1``, ``v_P2`` are state
variables, an exact change of variables), so the M/EEG-like outputs are single state variables.

**Outputs.** ``output="P1"`` (default) samples ``v_P1`` (deep, alpha; mV), ``"P2"`` samples
``v_P2`` (superficial, gamma) — the paper's LFP proxies are these pyramidal membrane
potentials — and ``"eeg"`` samples ``v_EEG = v_P1 + v_P2`` (both layers' pyramidal potentials, an
M/EEG proxy carrying both rhythms; a state variable integrated from the sum of the two
derivatives, so it equals the sum to rounding), all with ``hemodynamics="none"`` at ``bold_dt``
(set ``tr = bold_dt`` to keep every sample, e.g. 250 Hz – 1 kHz; spectral fits do this from
``simulation.meeg.fs``). ``output="rate"`` feeds the P1 rate ``m`` (Hz) to the Balloon–Windkessel
model (the default hemodynamics then is ``"balloon"``) for FC-based fits; :meth:`LaNMM.bold_variant`
gives it for the BOLD half of a composite spectral + FC fit.

**Regimes at the defaults** (measured here, dt = 0.1 ms, ``sigma = 0.3``): an isolated node has an
alpha peak at 11 Hz in ``v_P1`` and a gamma peak at ≈ 46–47 Hz in ``v_P2`` (1 Hz resolution); on
the HCP connectome (SC max 1, G = 10) alpha moves to ≈ 10.3 Hz and gamma stays at ≈ 46 Hz.
Raising G raises alpha power and slows alpha (11 → 9.7 Hz from G = 0 to 20); lowering the PV→P2
strength ``C_P2_PV`` lowers gamma power (the isolated node loses its gamma peak below ≈ 140).
Published regimes (Sanchez-Todo 2023; de Palma Aristides 2026): alpha (≈ 10 Hz, 8–12 Hz) in the
deep P1 generator and gamma (≈ 40 Hz, 30–50 Hz) in the superficial P2 generator; de Palma
Aristides et al. report that the AD-linked alterations impair the model's multifrequency activity,
while the LaNMM AD study reports *higher* gamma power with early PV dysfunction — at these
defaults weaker PV→P2 inhibition lowers gamma (``tests/test_lanmm.py``, an xfail test), so the
operating point differs from the published one in that respect.

**Parameter provenance.** The synaptic kinetics, sigmoid and the P1/SS/SST block are the
Jansen & Rit (1995) values the LaNMM reuses (A = 3.25 mV, a = 100 /s; slow GABA 22 mV, 50 /s;
C = 135, 108, 33.75, 33.75; e0 = 2.5 Hz, v0 = 6 mV, r = 0.56 /mV). The fast GABA kinetics,
the P2/PV block, the cross-layer couplings and the inputs p1, p2 follow the LaNMM structure but
could not be checked against the published parameter table in this environment (no full text was
available): they are set so that an isolated node reproduces the published behaviour (alpha near
10 Hz in P1, gamma near 40 Hz in P2). Check them against Sanchez-Todo et al. (2023), Table 1,
before quantitative use; they are ordinary parameters and can be overridden. (A search of the
literature index available here found the de Palma Aristides 2026 article only as its abstract and
front matter — no parameter table — so the published values could not be stated or checked.)
"""
from __future__ import annotations

import numpy as np

from .base import Model, Parameter, StateVariable

TAU_RELAY = 1e-3  # s, first-order relay of the P1 rate used for the network coupling

# synaptic groups (post, type) in state order; the first group of P1 and of P2 carries v_post
GROUPS = (
    ("P1", "AMPA"), ("P1", "GABAs"),
    ("SS", "AMPA"), ("SST", "AMPA"),
    ("P2", "AMPA"), ("P2", "GABAs"), ("P2", "GABAf"),
    ("PV", "AMPA"), ("PV", "GABAs"), ("PV", "GABAf"),
)
OUTPUTS = ("P1", "P2", "eeg", "rate")


def _state_variables():
    out = []
    for post, typ in GROUPS:
        first = (post, typ) in (("P1", "AMPA"), ("P2", "AMPA"))
        out.append(StateVariable(f"v_{post}" if first else f"u_{post}_{typ}", 0.0))
        out.append(StateVariable(f"w_{post}_{typ}", 0.0))
    out.append(StateVariable("m_P1", 0.0))
    out.append(StateVariable("v_EEG", 0.0))  # v_P1 + v_P2 (integrates the sum of their derivatives)
    return tuple(out)


_SV = _state_variables()
_IDX = {sv.name: i for i, sv in enumerate(_SV)}


def _sigmoid(v, e0, v0, r, one, exp):
    """Population firing rate ``2 e0 / (1 + exp(r (v0 - v)))`` (Hz) of membrane potential v (mV)."""
    return (e0 + e0) / (one + exp(r * (v0 - v)))


def lanmm_drift(v_P1, w_P1_AMPA, u_P1_GABAs, w_P1_GABAs, u_SS_AMPA, w_SS_AMPA, u_SST_AMPA, w_SST_AMPA,
                v_P2, w_P2_AMPA, u_P2_GABAs, w_P2_GABAs, u_P2_GABAf, w_P2_GABAf,
                u_PV_AMPA, w_PV_AMPA, u_PV_GABAs, w_PV_GABAs, u_PV_GABAf, w_PV_GABAf, m_P1, v_EEG,
                c, G, sigma, p1, p2, A_AMPA, a_AMPA, A_GABAs, a_GABAs, A_GABAf, a_GABAf, e0, v0, r,
                C_P1_SS, C_SS_P1, C_SST_P1, C_P1_SST, C_P1_P2, C_P2_P2, C_P2_PV, C_PV_P2, C_PV_PV, C_P2_SST,
                C_PV_SST, tau_m, one, exp):
    """The scalar declaration (:attr:`raybrain.models.Model.scalar_drift`) of one LaNMM region (the
    equations of the module docstring): the 22 derivatives in state order, then the rates of P1, P2
    and PV and the potentials of P1 and P2. Each synaptic group ``g`` with gain ``A`` (negative for
    GABA) and rate ``a`` has ``u̇ = A a w`` and ``ẇ = R - 2 a w - a u / A``."""
    v_PV = u_PV_AMPA + u_PV_GABAs + u_PV_GABAf
    f_P1 = _sigmoid(v_P1, e0, v0, r, one, exp)
    f_SS = _sigmoid(u_SS_AMPA, e0, v0, r, one, exp)
    f_SST = _sigmoid(u_SST_AMPA, e0, v0, r, one, exp)
    f_P2 = _sigmoid(v_P2, e0, v0, r, one, exp)
    f_PV = _sigmoid(v_PV, e0, v0, r, one, exp)
    Ae, ae, As, as_, Af, af = A_AMPA, a_AMPA, -A_GABAs, a_GABAs, -A_GABAf, a_GABAf
    # PSPs of the groups whose first PSP is replaced by the membrane potential
    u_P1_AMPA = v_P1 - u_P1_GABAs
    u_P2_AMPA = v_P2 - u_P2_GABAs - u_P2_GABAf
    # inputs R_g
    R_P1_AMPA = C_P1_SS * f_SS + C_P1_P2 * f_P2 + p1 + G * c
    R_P1_GABAs = C_P1_SST * f_SST
    R_SS_AMPA = C_SS_P1 * f_P1
    R_SST_AMPA = C_SST_P1 * f_P1
    R_P2_AMPA = C_P2_P2 * f_P2 + p2
    R_P2_GABAs = C_P2_SST * f_SST
    R_P2_GABAf = C_P2_PV * f_PV
    R_PV_AMPA = C_PV_P2 * f_P2
    R_PV_GABAs = C_PV_SST * f_SST
    R_PV_GABAf = C_PV_PV * f_PV
    du_P1_AMPA = Ae * ae * w_P1_AMPA
    du_P1_GABAs = As * as_ * w_P1_GABAs
    du_P2_AMPA = Ae * ae * w_P2_AMPA
    du_P2_GABAs = As * as_ * w_P2_GABAs
    du_P2_GABAf = Af * af * w_P2_GABAf
    dv_P1 = du_P1_AMPA + du_P1_GABAs
    dv_P2 = du_P2_AMPA + du_P2_GABAs + du_P2_GABAf
    return (
        dv_P1, R_P1_AMPA - (ae + ae) * w_P1_AMPA - ae * u_P1_AMPA / Ae,
        du_P1_GABAs, R_P1_GABAs - (as_ + as_) * w_P1_GABAs - as_ * u_P1_GABAs / As,
        Ae * ae * w_SS_AMPA, R_SS_AMPA - (ae + ae) * w_SS_AMPA - ae * u_SS_AMPA / Ae,
        Ae * ae * w_SST_AMPA, R_SST_AMPA - (ae + ae) * w_SST_AMPA - ae * u_SST_AMPA / Ae,
        dv_P2, R_P2_AMPA - (ae + ae) * w_P2_AMPA - ae * u_P2_AMPA / Ae,
        du_P2_GABAs, R_P2_GABAs - (as_ + as_) * w_P2_GABAs - as_ * u_P2_GABAs / As,
        du_P2_GABAf, R_P2_GABAf - (af + af) * w_P2_GABAf - af * u_P2_GABAf / Af,
        Ae * ae * w_PV_AMPA, R_PV_AMPA - (ae + ae) * w_PV_AMPA - ae * u_PV_AMPA / Ae,
        As * as_ * w_PV_GABAs, R_PV_GABAs - (as_ + as_) * w_PV_GABAs - as_ * u_PV_GABAs / As,
        Af * af * w_PV_GABAf, R_PV_GABAf - (af + af) * w_PV_GABAf - af * u_PV_GABAf / Af,
        (f_P1 - m_P1) / tau_m,
        dv_P1 + dv_P2,
        f_P1, f_P2, f_PV, v_P1, v_P2,
    )


class LaNMM(Model):
    """Laminar neural mass model: Jansen–Rit alpha (P1/SS/SST) + PING gamma (P2/PV) (Sanchez-Todo 2023)."""

    name = "lanmm"
    state_variables = _SV
    coupled_variables = (_IDX["m_P1"],)
    noise_variables = (_IDX["w_P1_AMPA"], _IDX["w_P2_AMPA"])
    summary_observables = ("r_P1", "r_P2")
    scalar_drift = staticmethod(lanmm_drift)
    scalar_observables = ("r_P1", "r_P2", "r_PV", "v_P1", "v_P2")
    kernel_functions = ("exp",)
    parameters = (
        Parameter("G", 0.0, "1", (0.0, 50.0), "global coupling: P1 rates of other regions onto P1 AMPA "
                  "(per unit SC weight)", regional=False),
        Parameter("sigma", 0.3, "Hz*sqrt(s)", (0.0, 3.0), "white-noise intensity of the P1 and P2 AMPA inputs"),
        Parameter("p1", 200.0, "Hz", (0.0, 400.0), "mean external input rate to P1"),
        Parameter("p2", 300.0, "Hz", (0.0, 400.0), "mean external input rate to P2"),
        Parameter("A_AMPA", 3.25, "mV", (0.1, 20.0), "AMPA synaptic gain"),
        Parameter("a_AMPA", 100.0, "1/s", (10.0, 1000.0), "AMPA rate constant"),
        Parameter("A_GABAs", 22.0, "mV", (0.1, 100.0), "slow GABA_A gain (inhibitory; enters as -A)"),
        Parameter("a_GABAs", 50.0, "1/s", (5.0, 500.0), "slow GABA_A rate constant"),
        Parameter("A_GABAf", 10.0, "mV", (0.1, 100.0), "fast GABA_A gain (inhibitory; enters as -A)"),
        Parameter("a_GABAf", 220.0, "1/s", (20.0, 2000.0), "fast GABA_A rate constant"),
        Parameter("e0", 2.5, "Hz", (0.1, 20.0), "half of the maximal firing rate"),
        Parameter("v0", 6.0, "mV", (-20.0, 30.0), "sigmoid threshold"),
        Parameter("r", 0.56, "1/mV", (0.01, 5.0), "sigmoid slope"),
        Parameter("C_P1_SS", 108.0, "1", (0.0, 1000.0), "SS → P1 (AMPA)"),
        Parameter("C_SS_P1", 135.0, "1", (0.0, 1000.0), "P1 → SS (AMPA)"),
        Parameter("C_SST_P1", 33.75, "1", (0.0, 1000.0), "P1 → SST (AMPA)"),
        Parameter("C_P1_SST", 33.75, "1", (0.0, 1000.0), "SST → P1 (slow GABA)"),
        Parameter("C_P1_P2", 1.0, "1", (0.0, 1000.0), "P2 → P1 (AMPA), superficial-to-deep"),
        Parameter("C_P2_P2", 50.0, "1", (0.0, 1000.0), "P2 → P2 recurrent excitation (AMPA)"),
        Parameter("C_P2_PV", 200.0, "1", (0.0, 1000.0), "PV → P2 (fast GABA): the AD-affected PV strength"),
        Parameter("C_PV_P2", 200.0, "1", (0.0, 1000.0), "P2 → PV (AMPA)"),
        Parameter("C_PV_PV", 20.0, "1", (0.0, 1000.0), "PV → PV (fast GABA)"),
        Parameter("C_P2_SST", 5.0, "1", (0.0, 1000.0), "SST → P2 (slow GABA), deep-to-superficial"),
        Parameter("C_PV_SST", 5.0, "1", (0.0, 1000.0), "SST → PV (slow GABA), deep-to-superficial"),
        Parameter("tau_m", TAU_RELAY, "s", (1e-4, 1e-2), "time constant of the P1-rate relay the network "
                  "coupling reads"),
    )

    def __init__(self, output: str = "P1"):
        if output not in OUTPUTS:
            raise ValueError(f"LaNMM output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        self.bold_input = {"P1": _IDX["v_P1"], "P2": _IDX["v_P2"], "eeg": _IDX["v_EEG"], "rate": _IDX["m_P1"]}[output]
        self.default_hemodynamics = "balloon" if output == "rate" else "none"

    def __repr__(self) -> str:
        return f"LaNMM(output={self.output!r})"

    def bold_variant(self) -> "LaNMM":
        """The same model with ``output="rate"`` (P1 rate → Balloon–Windkessel BOLD): the BOLD
        half of a composite (spectral + FC) fit; its trajectory is identical, only the sampled
        variable differs."""
        return LaNMM(output="rate")

    def initial_state(self, batch: int, n: int, xp=np, dtype=np.float64) -> tuple:
        # start at rest with the relay at the resting P1 rate (no initial network kick)
        out = [xp.zeros((batch, n), dtype=dtype) for _ in self.state_variables]
        out[_IDX["m_P1"]] = xp.full((batch, n), 5.0 / (1.0 + np.exp(0.56 * 6.0)), dtype=dtype)
        return tuple(out)
