r"""An optimizer family of one's own: a (1+λ) evolution strategy, as an ask/tell family.

Name it in an experiment config as ``name: examples.my_optimizer:OnePlusLambda`` (see
``experiments/custom-optimizer.yaml``) and run from the repository root::

    raybrain run experiments/custom-optimizer.yaml

The family searches the unit box of the parameters' bounds (as the built-in ones do). Each
generation draws λ = ``population`` children around one parent,
:math:`u_k = \mathrm{clip}(m + \sigma z_k)`, :math:`z_k \sim \mathcal{N}(0, I)`; the best child
replaces the parent when it is no worse, and the step size follows the 1/5 success rule
(Rechenberg 1973; Kern et al. 2004) on the fraction :math:`p` of children better than their parent:
:math:`\sigma \leftarrow \sigma\, a^{(p - 1/5)/(4/5)}` (:math:`\times a` when all are better,
:math:`\times a^{-1/4}` when none is). Settings: ``sigma0`` (the first step size, a fraction of
each parameter's range; default 0.2) and ``adapt`` (:math:`a`; default 1.5).

Everything a family needs is here: ``name``, ``defaults`` (every accepted setting; any other key is
refused when the config is validated), ``_setup`` (seeded state), ``_ask_unit`` (one generation in
the unit box) and ``_tell`` (losses of rows of the last ask; it may be called several times for one
generation). The base class (:class:`raybrain.search.Optimizer`) keeps candidates inside the
bounds, matches tells to asks, tracks the best, and checkpoints by pickling, so the module must be
importable wherever Ray runs the family (see the README: "Your own optimizer family"). In trial
mode the same class runs one generation at a time, ``population`` trials of it in flight.
"""
from __future__ import annotations

import numpy as np

from raybrain.search import Optimizer


class OnePlusLambda(Optimizer):
    """(1+λ) evolution strategy with the 1/5 success rule."""

    name = "one-plus-lambda"
    defaults = {"sigma0": 0.2, "adapt": 1.5}

    def _setup(self) -> None:
        if not 0 < self.settings["sigma0"] <= 1 or not self.settings["adapt"] > 1:
            raise ValueError("one-plus-lambda: sigma0 must be in (0, 1] and adapt > 1")
        self._rng = np.random.default_rng(self.seed)
        self.parent = np.full(self.dim, 0.5)       # the box's centre
        self.parent_loss = np.inf
        self.sigma = float(self.settings["sigma0"])
        self._children = np.empty((0, self.dim))
        self._losses = np.empty(0)

    def _ask_unit(self) -> np.ndarray:
        z = self._rng.standard_normal((self.population, self.dim))
        self._children = np.clip(self.parent + self.sigma * z, 0.0, 1.0)
        self._losses = np.full(self.population, np.nan)
        return self._children

    def _tell(self, index, losses) -> None:
        self._losses[index] = losses
        if np.isnan(self._losses).any():  # the generation is not complete yet
            return
        success = float(np.mean(self._losses < self.parent_loss))   # children better than the parent
        self.sigma *= float(self.settings["adapt"]) ** ((success - 0.2) / 0.8)
        self.sigma = float(np.clip(self.sigma, 1e-6, 1.0))
        k = int(np.argmin(self._losses))
        if self._losses[k] <= self.parent_loss:
            self.parent, self.parent_loss = self._children[k].copy(), float(self._losses[k])
