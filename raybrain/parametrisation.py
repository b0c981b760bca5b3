r"""Parametrisations: a search vector ``theta`` (B, P) ↔ named model parameters over (B, N).

Three families (science: Kong 2021 pMFM, Zhang 2024 pFIC, DELSSOME, TVB-Optim):

* :class:`Global` — one value per parameter set, e.g. ``(G, sigma)``: P = 2.
* :class:`Maps` — each regional parameter is a linear combination of two cortical maps,

  .. math:: p_i = c_0 + c_1 m_{1,i} + c_2 m_{2,i}

  with ``m1`` = SC strength and ``m2`` = the principal gradient of the empirical FC (Margulies et
  al. 2016, diffusion-map embedding), each standardised to zero mean and unit maximum magnitude.
  ``w_EE``, ``w_EI`` and ``sigma`` by maps plus ``G`` is the 10-parameter pFIC form
  (Zhang et al. 2024; they use T1w/T2w myelin for m1 — any ``(2, N)`` maps may be passed).
* :class:`Regional` — one value per region for one parameter (N parameters), plus globals.

Every parametrisation has named parameters (``names``) with bounds (``bounds``, shape (P, 2));
the names are the dataframe columns and the config keys. The search keeps each named parameter
inside its bounds; only :class:`Maps` clips the *regional values* it derives to the model
parameter's admissible range (a map combination could otherwise give e.g. a negative sigma).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .models import Model, get_model
from .models.base import _did_you_mean


class Parametrisation:
    """Base: ``names``, ``bounds`` (P, 2) and :meth:`to_model_params`."""

    kind = ""
    names: tuple[str, ...] = ()
    bounds: np.ndarray

    @property
    def size(self) -> int:
        return len(self.names)

    def check(self, theta) -> np.ndarray:
        """``theta`` as a float (B, P) array; a single vector becomes B = 1."""
        t = np.asarray(theta, dtype=np.float64)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != self.size:
            raise ValueError(f"parameter vectors must have shape (B, {self.size}) for {list(self.names)}, "
                             f"got {np.shape(theta)}")
        if not np.all(np.isfinite(t)):
            raise ValueError("parameter vectors contain non-finite values")
        return t

    def from_dict(self, values: Mapping[str, float]) -> np.ndarray:
        """A (1, P) vector from ``{name: value}``; missing names take the middle of their bounds."""
        unknown = [k for k in values if k not in self.names]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}{_did_you_mean(unknown[0], self.names)}")
        mid = self.bounds.mean(axis=1)
        return np.array([[float(values.get(n, m)) for n, m in zip(self.names, mid)]])

    def to_dicts(self, theta) -> list[dict[str, float]]:
        t = self.check(theta)
        return [dict(zip(self.names, map(float, row))) for row in t]

    def to_model_params(self, theta) -> dict[str, np.ndarray]:
        """Model parameters of a batch ``theta`` (B, P), validated: (B,) columns for global
        parameters, (B, N) for regional ones (float64 NumPy arrays)."""
        t = self.check(theta)
        return {k: np.array(v, dtype=np.float64) for k, v in self.mapping(t, np).items()}

    def vector_params(self, theta, xp=np) -> dict:
        """Model parameters of ONE vector ``theta`` (P,) on array module ``xp`` (NumPy, ``jax.numpy``),
        unvalidated so it can be differentiated (:mod:`raybrain.losses.differentiable`): row 0 of
        :meth:`mapping` — scalars for global parameters, (N,) arrays for regional ones."""
        return {k: v[0] for k, v in self.mapping(theta[None], xp).items()}

    def mapping(self, theta, xp=np) -> dict:  # pragma: no cover
        """The map from a batch ``theta`` (B, P) to model parameters, written once over ``xp``."""
        raise NotImplementedError

def _bounds_for(model: Model, names: Sequence[str], bounds: Mapping[str, Sequence[float]] | None) -> np.ndarray:
    bounds = dict(bounds or {})
    out = []
    for n in names:
        lo, hi = bounds.pop(n) if n in bounds else model.parameter(n.split(".")[0].split("[")[0]).bounds
        if not lo < hi:
            raise ValueError(f"bounds for {n!r} are reversed or empty: [{lo}, {hi}]")
        out.append((float(lo), float(hi)))
    if bounds:
        k = next(iter(bounds))
        raise ValueError(f"bounds given for unknown parameter {k!r}{_did_you_mean(k, names)}")
    return np.array(out, dtype=np.float64).reshape(-1, 2)


@dataclass
class Global(Parametrisation):
    """One value per parameter set for each of ``names`` (default ``("G", "sigma")``)."""

    model: Model
    names: tuple[str, ...] = ("G", "sigma")
    bounds_override: Mapping[str, Sequence[float]] | None = None
    fixed: Mapping[str, float] = field(default_factory=dict)
    kind = "global"

    def __post_init__(self):
        self.model = get_model(self.model)
        self.names = tuple(self.names)
        for n in self.names:
            self.model.parameter(n)
        self.bounds = _bounds_for(self.model, self.names, self.bounds_override)

    def mapping(self, theta, xp=np):
        out = {k: xp.full(theta.shape[0], float(v)) for k, v in self.fixed.items()}
        for j, n in enumerate(self.names):
            out[n] = theta[:, j]
        return out


def standardise_map(m) -> np.ndarray:
    """Zero mean, unit maximum magnitude (so ``c1`` is in the parameter's own units)."""
    m = np.asarray(m, dtype=np.float64)
    m = m - m.mean()
    scale = np.abs(m).max()
    if not np.isfinite(scale) or scale == 0:
        raise ValueError("a map for the 'maps' parametrisation is constant or not finite")
    return m / scale


def sc_strength(sc) -> np.ndarray:
    """Node strength ``sum_j C_ij`` (the SC-strength map)."""
    return np.asarray(sc, dtype=np.float64).sum(axis=1)


def fc_gradient(fc, sparsity: float = 0.9, alpha: float = 0.5) -> np.ndarray:
    """Principal gradient of an FC matrix by diffusion-map embedding (Margulies et al. 2016).

    Rows are thresholded to their top ``1 - sparsity`` connections, the affinity is the cosine
    similarity of the thresholded rows, normalised as in diffusion maps with ``alpha`` (Coifman &
    Lafon 2006), and the first non-trivial eigenvector of the Markov matrix is returned, oriented so
    its largest-magnitude entry is positive.
    """
    fc = np.array(fc, dtype=np.float64)
    np.fill_diagonal(fc, 0.0)
    thr = np.quantile(fc, sparsity, axis=1, keepdims=True)
    x = np.where(fc >= thr, fc, 0.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    x = x / norm
    a = np.clip(x @ x.T, 0.0, None)
    d = a.sum(axis=1)
    l_ = a / np.outer(d ** alpha, d ** alpha)
    dl = l_.sum(axis=1)
    # symmetric form of the Markov matrix D^-1 L for a stable eigensolve
    s = l_ / np.sqrt(np.outer(dl, dl))
    w, v = np.linalg.eigh(s)
    psi = v[:, -2] / np.sqrt(dl)  # skip the trivial (constant) component
    return psi if psi[np.argmax(np.abs(psi))] > 0 else -psi


@dataclass
class Maps(Parametrisation):
    """Regional parameters as ``c0 + c1·m1 + c2·m2`` plus global ones (pFIC: 10 parameters).

    ``maps`` is ``(2, N)``; build the pFIC pair with :meth:`from_subject`. Names are
    ``"w_EE.c0"``, ``"w_EE.c1"``, ``"w_EE.c2"``, …, then the global names (``"G"``). The bounds of
    ``c0`` default to the model parameter's bounds, those of ``c1``/``c2`` to ± a quarter of its
    range.
    """

    model: Model
    maps: np.ndarray
    regional: tuple[str, ...] = ("w_EE", "w_EI", "sigma")
    globals_: tuple[str, ...] = ("G",)
    bounds_override: Mapping[str, Sequence[float]] | None = None
    kind = "maps"

    def __post_init__(self):
        self.model = get_model(self.model)
        m = np.asarray(self.maps, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != 2:
            raise ValueError(f"maps must have shape (2, N), got {m.shape}")
        self.maps = np.stack([standardise_map(m[0]), standardise_map(m[1])])
        names, default = [], {}
        for p in self.regional:
            lo, hi = self.model.parameter(p).bounds
            q = (hi - lo) / 4.0
            for c, b in (("c0", (lo, hi)), ("c1", (-q, q)), ("c2", (-q, q))):
                names.append(f"{p}.{c}")
                default[f"{p}.{c}"] = b
        for g in self.globals_:
            self.model.parameter(g)
            names.append(g)
            default[g] = self.model.parameter(g).bounds
        over = dict(self.bounds_override or {})
        for k in over:
            if k not in default:
                raise ValueError(f"bounds given for unknown parameter {k!r}{_did_you_mean(k, names)}")
        default.update(over)
        self.names = tuple(names)
        self.bounds = _bounds_for(self.model, self.names, default)

    @classmethod
    def from_subject(cls, model, subject, **kw) -> "Maps":
        """pFIC maps from a subject: m1 = SC strength, m2 = principal gradient of its empirical FC."""
        return cls(model, np.stack([sc_strength(subject.sc), fc_gradient(subject.fc())]), **kw)

    def mapping(self, theta, xp=np):
        out, j = {}, 0
        m1, m2 = xp.asarray(self.maps[0]), xp.asarray(self.maps[1])
        for p in self.regional:
            lo, hi = self.model.parameter(p).bounds
            out[p] = xp.clip(theta[:, j:j + 1] + theta[:, j + 1:j + 2] * m1 + theta[:, j + 2:j + 3] * m2, lo, hi)
            j += 3
        for g in self.globals_:
            out[g] = theta[:, j]
            j += 1
        return out


@dataclass
class Regional(Parametrisation):
    """One value per region of ``parameter`` (names ``"w_EE[0]"``, …) plus global ones."""

    model: Model
    n_regions: int
    parameter: str = "w_EE"
    globals_: tuple[str, ...] = ("G",)
    bounds_override: Mapping[str, Sequence[float]] | None = None
    kind = "regional"

    def __post_init__(self):
        self.model = get_model(self.model)
        lo, hi = self.model.parameter(self.parameter).bounds
        self.names = tuple(f"{self.parameter}[{i}]" for i in range(self.n_regions)) + tuple(self.globals_)
        over = dict(self.bounds_override or {})
        if self.parameter in over:  # one bound for every region
            b = over.pop(self.parameter)
            over.update({f"{self.parameter}[{i}]": b for i in range(self.n_regions)})
        self.bounds = _bounds_for(self.model, self.names, over)

    def mapping(self, theta, xp=np):
        n = self.n_regions
        out = {self.parameter: theta[:, :n]}
        for k, g in enumerate(self.globals_):
            out[g] = theta[:, n + k]
        return out


PARAMETRISATIONS = {"global": Global, "maps": Maps, "regional": Regional}
