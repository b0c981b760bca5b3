r"""Hopf (Stuart–Landau) normal-form model of whole-brain dynamics.

Deco, Kringelbach, Jirsa & Ritter (2017), Sci. Rep. 7:3095, "The dynamics of resting
fluctuations in the brain: metastability and its dynamical cortical core". Per region i:

.. math::

    dx_i &= \left[(a_i - x_i^2 - y_i^2) x_i - \omega_i y_i + G \sum_j C_{ij}(x_j - x_i)\right] dt + \sigma\, dW^x_i \\
    dy_i &= \left[(a_i - x_i^2 - y_i^2) y_i + \omega_i x_i + G \sum_j C_{ij}(y_j - y_i)\right] dt + \sigma\, dW^y_i

``a`` is the bifurcation parameter (noisy oscillations near ``a = 0``), ``omega`` the intrinsic
angular frequency (rad/s; 2π × 0.04–0.07 Hz for BOLD). The BOLD-like signal is ``x`` itself,
sampled at the TR without hemodynamics (Deco 2017), so this model defaults to
``hemodynamics="none"``. The model is here to show that the integrator, features and losses are
model-agnostic: it has two coupled variables and a diffusive coupling.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .base import Model, Parameter, StateVariable


def hopf_drift(x, y, cx, cy, G, sigma, a, omega, sc_row_sum, one):
    """The scalar declaration (:attr:`raybrain.models.Model.scalar_drift`) of one Hopf node:
    ``(dx, dy)`` with network inputs ``cx = Σ_j C_ij x_j``, ``cy = Σ_j C_ij y_j``."""
    r2 = x * x + y * y
    dx = (a - r2) * x - omega * y + G * (cx - sc_row_sum * x)
    dy = (a - r2) * y + omega * x + G * (cy - sc_row_sum * y)
    return dx, dy


class Hopf(Model):
    """Hopf (Stuart–Landau) normal-form oscillators, diffusively coupled (Deco 2017)."""

    name = "hopf"
    state_variables = (StateVariable("x", 0.1), StateVariable("y", 0.1))
    coupled_variables = (0, 1)
    bold_input = 0
    noise_variables = (0, 1)
    default_hemodynamics = "none"
    parameters = (
        Parameter("G", 0.5, "1/s", (0.0, 5.0), "global coupling", regional=False),
        Parameter("sigma", 0.02, "1/sqrt(s)", (0.0, 0.1), "noise amplitude"),
        Parameter("a", -0.02, "1/s", (-0.5, 0.5), "bifurcation parameter"),
        Parameter("omega", 2 * np.pi * 0.05, "rad/s", (0.0, 2 * np.pi * 0.2), "intrinsic angular frequency"),
    )

    scalar_drift = staticmethod(hopf_drift)
    derived_parameters = ("sc_row_sum",)

    def prepare(self, params: Mapping[str, Any], sc_row_sum, xp=np) -> dict[str, Any]:
        """Adds ``sc_row_sum`` = Σ_j C_ij, the diffusive coupling's self term."""
        p = dict(params)
        p["sc_row_sum"] = sc_row_sum
        return p
