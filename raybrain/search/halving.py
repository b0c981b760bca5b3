r"""Successive halving over simulated duration, inside one generation of a population run.

Jamieson & Talwalkar 2016; the inner loop of HyperBand (Li et al. 2018). A generation of
:math:`P` candidates is simulated to the first fidelity's duration :math:`d_0` and scored; the
best :math:`\lceil P/\eta \rceil` are simulated on to :math:`d_1` and scored again, and so on: the
best :math:`\lceil P/\eta^k \rceil` reach rung :math:`k`, up to the last fidelity. Only the
survivors pay for the long simulations. With :math:`\eta = 2` and rungs of 216, 432 and 864 s a
generation costs :math:`P\,(216 + 216/2 + 432/4) = 432\,P` simulated seconds instead of
:math:`864\,P`.

**Continuation.** When a rung has the same ``dt`` as the one below it, the survivors continue
their simulations from where they stopped (:meth:`raybrain.integrate.SimState.take`), with the
same noise streams. A survivor's BOLD at rung :math:`k` is then exactly the BOLD of one straight
simulation to :math:`d_k`, and its loss at the top rung is the loss a plain evaluation at the top
fidelity gives. When ``dt`` changes between rungs, the survivors are simulated afresh.

**What the optimizer is told.** Losses at different durations do not compare (short simulations
give noisier FC and FCD). So the generation is ranked rung by rung: every candidate that reached
rung :math:`k` ranks above every candidate stopped at rung :math:`k-1`. Each candidate is told its
loss at the highest rung it reached. For the candidates stopped early, that loss is lifted to
keep this order: the losses of the candidates stopped at one rung are shifted by one constant,
so that the best of them lies just above the worst loss told to a candidate that went further.
Within a rung, order and spacing are kept. Rank-based optimizers (CMA-ES, DE, PSO) see the true
ranking; value-based ones (TPE, GP) see lifted values for candidates stopped early.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Rung", "successive_halving", "told_losses", "rung_sizes"]


@dataclass
class Rung:
    """The candidates scored at one fidelity: ``index`` are their rows in the generation's theta,
    ``records`` their records (in the order of ``index``)."""

    fidelity: int
    index: np.ndarray
    records: list


def rung_sizes(population: int, n_rungs: int, eta: float = 2.0) -> list[int]:
    """Candidates scored at each rung: :math:`\\lceil P/\\eta^k \\rceil` (at least 1)."""
    if not eta > 1:
        raise ValueError(f"successive halving needs eta > 1, got {eta!r}")
    return [max(1, math.ceil(population / eta ** k - 1e-9)) for k in range(n_rungs)]


def successive_halving(objectives: Sequence, theta, *, eta: float = 2.0, seed: int | None = None,
                       repeats: int = 1, first_stream: int = 0) -> list[Rung]:
    """Evaluate one generation ``theta`` (B, P) by successive halving over ``objectives`` (one
    :class:`raybrain.objective.Objective` per fidelity, ascending; same subject). Noise as in
    :meth:`Objective.evaluate`: seed ``seed``, candidate ``b`` on streams ``first_stream + b·R + r``.

    Returns one :class:`Rung` per fidelity; records carry ``new_sims`` (``repeats`` where a
    simulation started, 0 where one continued) and the wall time of their rung."""
    theta = np.asarray(theta, dtype=np.float64)
    B, R = theta.shape[0], int(repeats)
    sizes = rung_sizes(B, len(objectives), eta)
    idx = np.arange(B)
    rungs: list[Rung] = []
    sim = bold = losses = None
    done = 0.0
    for k, obj in enumerate(objectives):
        t0 = time.perf_counter()
        rows = None
        if k:
            pos = np.sort(np.argsort(losses, kind="stable")[:sizes[k]])  # survivors, in generation order
            idx = idx[pos]
            rows = (pos[:, None] * R + np.arange(R)).ravel()
        fresh = sim is None or obj.settings.dt != sim.settings.dt
        if fresh:
            sim = obj.simulation(theta[idx], seed=seed, repeats=R, first_stream=first_stream, candidates=idx)
            bold, done = None, 0.0
        else:
            sim = obj.simulation(theta[idx], seed=seed, repeats=R, state=sim.state.take(rows))
            bold = bold[rows]
        compile_s = sim.prepare()  # kernel compile / load: recorded apart from the wall time
        t0 += compile_s
        res = sim.run(obj.settings.duration - done)
        done = obj.settings.duration
        bold = res.bold if bold is None else np.concatenate([bold, np.asarray(res.bold)], axis=1)
        records = obj.score(theta[idx], bold, res, repeats=R, wall_s=time.perf_counter() - t0, compile_s=compile_s)
        for r in records:
            r["new_sims"] = R if fresh else 0
        losses = np.array([_finite(r["loss"]) for r in records])
        rungs.append(Rung(k, idx.copy(), records))
    return rungs


def _finite(x) -> float:
    return float(x) if x is not None and math.isfinite(x) else math.inf


def told_losses(rungs: Sequence[Rung], n: int) -> np.ndarray:
    """The loss to tell the optimizer for each of the ``n`` candidates (see the module docstring)."""
    told = np.full(n, np.nan)
    ceiling = -np.inf
    later: set[int] = set()
    for rung in reversed(rungs):
        loss = np.array([_finite(r["loss"]) for r in rung.records])
        stopped = np.array([i not in later for i in rung.index.tolist()])
        if stopped.any():
            vals = loss[stopped]
            finite = np.isfinite(vals)
            if finite.any():
                lo, hi = vals[finite].min(), vals[finite].max()
                shift = 0.0 if ceiling == -np.inf else max(0.0, ceiling - lo) + 1e-6 * max(1.0, abs(ceiling))
                vals = np.where(finite, vals + shift, hi + shift + 1.0)
            else:
                vals = np.full(vals.shape, (0.0 if ceiling == -np.inf else ceiling) + 1.0)
            told[rung.index[stopped]] = vals
            ceiling = max(ceiling, vals.max())
        later.update(rung.index.tolist())
    if np.isnan(told).any():
        raise ValueError("told_losses: some candidates were scored at no rung")
    return told
