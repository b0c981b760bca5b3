"""Costs comparing a simulated signal with empirical features. Adding a loss is one file here plus
one line in ``LOSSES``.

Every loss follows one protocol (:mod:`raybrain.losses.base`): called on a batch of simulated
signals (B, T, N) and a target, it returns a :class:`LossResult` of finite per-candidate arrays, an
invalid candidate getting the loss's finite ``worst``. Registered losses:

- ``"pfic"``, ``"pmfm"``, ``"fc_corr"`` (:mod:`raybrain.losses.fc`): BOLD FC / FCD against a
  :class:`Target` (Zhang et al. 2024 pFIC; Kong et al. 2021 pMFM; FC correlation alone).
- ``"spectral"`` (:mod:`raybrain.losses.spectral`): ``d / (1 + d)`` of the log-PSD distance of an
  M/EEG-like signal (not BOLD) to an empirical spectrum (a :class:`raybrain.spectral.SpectralTarget`).

:class:`CompositeLoss` (:mod:`raybrain.losses.composite`) is a weighted sum of registered losses,
each on its own signal and target; it is built from the registry, not registered itself.

:mod:`raybrain.losses.differentiable` holds the JAX stand-ins of the BOLD losses that gradient
fitting differentiates (smoothed KS for the FCD term); they are not registered (not imported here).
"""
from __future__ import annotations

import difflib

from .base import Loss, LossResult, Target, valid_rows
from .composite import CompositeLoss
from .fc import FCCorrLoss, PFICLoss, PMFMLoss
from .spectral import SpectralLoss

LOSSES: dict[str, type[Loss]] = {
    "pfic": PFICLoss,
    "pmfm": PMFMLoss,
    "fc_corr": FCCorrLoss,
    "spectral": SpectralLoss,
}


def get_loss(name: str, **kwargs) -> Loss:
    """Instantiate a registered loss by name (``"pfic"``, ``"pmfm"``, ``"fc_corr"``, ``"spectral"``)."""
    if isinstance(name, Loss):
        return name
    try:
        cls = LOSSES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(LOSSES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown loss {name!r} (known: {', '.join(sorted(LOSSES))}){hint}") from None
    return cls(**kwargs)


__all__ = [
    "Target",
    "LossResult",
    "Loss",
    "valid_rows",
    "PFICLoss",
    "PMFMLoss",
    "FCCorrLoss",
    "SpectralLoss",
    "CompositeLoss",
    "LOSSES",
    "get_loss",
]
