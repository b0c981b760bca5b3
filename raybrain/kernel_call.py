"""One call of a fused kernel: the state it advances in place, the plan it follows, its outputs.

Every fused path — the numba kernels (:mod:`raybrain.fused`), the CUDA kernel and its CPU harness
(:mod:`raybrain.cuda`) — takes one :class:`KernelCall` built by :class:`raybrain.integrate.Simulation`
from its state. The arrays are packed by the model's declaration
(:class:`raybrain.models.Model`): state variables in ``state_variables`` order, parameters in
``kernel_parameters`` order, running sums of the state variables then of ``summary_observables``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .models import Model


@dataclass
class KernelCall:
    """The arguments of one fused-kernel call (arrays of one backend, updated in place).

    Shapes: ``B`` batch elements, ``N`` regions, ``S`` state variables, ``P`` kernel parameters,
    ``O`` summary observables, ``T`` BOLD samples this call writes.
    """

    model: Model
    X: Any  #: (S, B, N) neural state, simulation dtype
    H: Any  #: (4, B, N) Balloon–Windkessel state (s, f, v, q): float64 on the CPU
    acc: Any  #: (B, N) hemodynamic input summed since the last hemodynamic step
    sums: Any  #: (S + O, B, N) float64 running sums after the burn-in
    CS: Any  #: (n_subjects, N, N) connectomes, simulation dtype
    subject_index: np.ndarray  #: (B,) int64, host
    PAR: Any  #: (B, P, N) parameters, simulation dtype
    keys: Any  #: (B,) uint64 noise keys
    step0: int  #: global neural step the call starts at (it indexes the noise)
    n_steps: int
    dt: Any  #: neural step (s), simulation dtype
    k_h: int  #: neural steps per hemodynamic step
    inv_kh: Any  #: 1 / k_h, simulation dtype
    dt_h: Any  #: the hemodynamic step k_h dt (s), simulation dtype
    k_tr: int  #: hemodynamic steps per TR
    m_burn: int  #: hemodynamic steps of burn-in
    coef: tuple  #: :meth:`raybrain.hemodynamics.BalloonWindkessel.coefficients` in the simulation dtype
    bold_on: bool  #: True: Balloon–Windkessel BOLD; False: sample the model's ``bold_input`` state
    bold_out: Any  #: (B, T, N) output samples, simulation dtype


def make_tiles(subject_index, lanes: int):
    """Group the batch into tiles of ``lanes`` elements with one connectome each.

    Returns ``(tile_subj (T,), tile_src (T, lanes), tile_real (T, lanes))``: the connectome of each
    tile, the batch element in each lane (padding lanes repeat the tile's last element) and
    whether a lane is real (its results are written back).
    """
    subject_index = np.asarray(subject_index, dtype=np.int64)
    subj, src, real = [], [], []
    for s in np.unique(subject_index):
        idx = np.flatnonzero(subject_index == s)
        for a in range(0, len(idx), lanes):
            chunk = idx[a:a + lanes]
            subj.append(s)
            src.append(np.concatenate([chunk, np.repeat(chunk[-1:], lanes - len(chunk))]))
            real.append(np.arange(lanes) < len(chunk))
    return (np.asarray(subj, dtype=np.int64), np.asarray(src, dtype=np.int64).reshape(-1, lanes),
            np.asarray(real, dtype=np.bool_).reshape(-1, lanes))
