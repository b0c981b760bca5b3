"""Neural-mass models. Adding a model is one file here plus one line in ``MODELS``."""
from __future__ import annotations

from .base import Model, Parameter, StateVariable, _did_you_mean, broadcast_param
from .hopf import Hopf
from .lanmm import LaNMM
from .rww import ReducedWongWang

MODELS = {
    "rww": ReducedWongWang,
    "hopf": Hopf,
    "lanmm": LaNMM,
}


def get_model(name: str, **options) -> Model:
    """Instantiate a registered model by name, e.g. ``get_model("rww", fic=False)``."""
    if isinstance(name, Model):
        return name
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}{_did_you_mean(name, MODELS)}") from None
    return cls(**options)


__all__ = ["MODELS", "Model", "Parameter", "StateVariable", "broadcast_param", "get_model",
           "Hopf", "ReducedWongWang"]
