"""raybrain: personalised whole-brain models at cluster scale.

The core: batched neural-mass models (:mod:`raybrain.models`), Balloon–Windkessel hemodynamics
(:mod:`raybrain.hemodynamics`), Euler–Maruyama integration streamed to BOLD
(:mod:`raybrain.integrate`, fused CPU path in :mod:`raybrain.fused`), FC/FCD features and costs
(:mod:`raybrain.features`, :mod:`raybrain.losses`), bundled and user data (:mod:`raybrain.data`),
parametrisations and the objective (:mod:`raybrain.parametrisation`, :mod:`raybrain.objective`).
"""
__version__ = "0.1.0"

from .integrate import SimResult, SimState, Simulation, SimulationSettings, simulate  # noqa: E402
from .models import get_model  # noqa: E402

__all__ = ["Simulation", "SimulationSettings", "SimState", "SimResult", "simulate", "get_model", "__version__"]
