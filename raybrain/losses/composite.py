"""A weighted sum of losses, each on its own signal and target.

:class:`CompositeLoss` — ``total = Σ_k w_k · loss_k(signals[k], targets[k])``, e.g. FC
correlation on BOLD plus the spectral loss on the LFP of the same candidates
(``{"spectral": 1.0, "fc_corr": 0.5}`` in a fit's configuration; built by
:func:`raybrain.objective.build_loss`). Not registered in :data:`raybrain.losses.LOSSES`: it is
made from registered losses.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from raybrain._backend import array_module

from .base import LossResult

__all__ = ["CompositeLoss"]


class CompositeLoss:
    """Weighted sum of losses on named signals: ``total = Σ_k w_k · loss_k(signals[k], targets[k])``.

    ``parts`` maps a name to ``(loss, weight)``; components come back prefixed ``"<name>.<comp>"``
    plus ``"<name>.total"``. A candidate invalid in any part gets ``worst = Σ w_k worst_k``.
    Example: ``CompositeLoss({"fc": (FCCorrLoss(), 1.0), "psd": (SpectralLoss(), 0.5)})`` called as
    ``loss({"fc": bold, "psd": lfp}, {"fc": Target(...), "psd": SpectralTarget(...)})``.
    """

    needs_fcd = False

    def __init__(self, parts: Mapping[str, tuple]):
        if not parts:
            raise ValueError("CompositeLoss needs at least one part")
        self.parts = {}
        for k, (loss, w) in parts.items():
            if not (np.isfinite(w) and w >= 0):
                raise ValueError(f"weight of part {k!r} must be finite and >= 0, got {w!r}")
            self.parts[k] = (loss, float(w))
        self.needs_fcd = any(getattr(lo, "needs_fcd", False) for lo, _ in self.parts.values())
        self.worst = float(sum(w * lo.worst for lo, w in self.parts.values()))
        self.name = "+".join(f"{w:g}*{getattr(lo, 'name', k)}" for k, (lo, w) in self.parts.items())

    def __call__(self, signals: Mapping, targets: Mapping, valid=None) -> LossResult:
        missing = [k for k in self.parts if k not in signals or k not in targets]
        if missing:
            raise ValueError(f"CompositeLoss: no signal/target for part(s) {missing}")
        total, good, comps = None, None, {}
        for k, (loss, w) in self.parts.items():
            r = loss(signals[k], targets[k], valid=valid)
            total = w * r.total if total is None else total + w * r.total
            good = r.valid if good is None else good & r.valid
            comps[f"{k}.total"] = r.total
            comps.update({f"{k}.{c}": v for c, v in r.components.items()})
        xp = array_module(total)
        total = xp.where(good, total, self.worst)
        return LossResult(total=total, components=comps, valid=good, name=self.name)
