r"""Dynamical landscape inspection: where the fixed point a model is held at stays stable as G grows.

A model whose :meth:`~raybrain.models.base.Model.fixed_point` hook returns a state (rWW with
feedback inhibition control: FIC places every region at ``I_E* = b_E/a_E - 0.026`` nA,
Deco et al. 2014; Demirtas et al. 2019) is only meaningful while that fixed point is stable: beyond
a critical coupling the network leaves it, firing rates run away, and a fit's trial dies with
non-finite features. This module finds that edge before any simulation is run.

For the whole network's deterministic drift ``F(x)`` (all state variables of all ``N`` regions,
``x`` of length ``K·N`` ordered variable-major: the ``N`` values of the first state variable,
then of the second, ...; network input ``c_v = C x_v`` for each entry ``v`` of the model's
``coupled_variables``, G applied inside the drift, as :mod:`raybrain.integrate` does) the Jacobian at
the fixed point ``x*`` is computed by central differences of the model's declared ``drift``,

.. math::

    J_{:,k} = \frac{F(x^* + h_k e_k) - F(x^* - h_k e_k)}{2 h_k}, \qquad h_k = 10^{-6} \max(1, |x^*_k|),

(all ``2·K·N`` perturbed states in one batched drift call; error O(h²), about 1e-9 relative for
rWW), generic, with no model-specific code. The fixed point is linearly stable when every
eigenvalue of ``J`` has a negative real part (Strogatz, *Nonlinear Dynamics and Chaos*, ch. 6);
the largest real part ``max Re λ(J)`` crosses zero at the edge, through a complex pair (a Hopf
bifurcation; ``leading_imag_hz`` ≠ 0) or a real eigenvalue (a saddle-node). For rWW with FIC the
point is also admissible only while FIC's ``w_IE`` is finite and positive (``w_IE_ok``).

* :func:`stability` — one G: :class:`StabilityPoint`.
* :func:`landscape` — a G grid: a :class:`pandas.DataFrame`, one row per G.
* :func:`stable_g_range` — the contiguous stable interval from the grid's lowest G, its upper edge
  refined by bisection.
* :func:`auto_g_bounds` — search bounds for G inside that interval (``bounds: {G: auto}``).

The SC is used as given: pass the normalised connectome the simulation will use
(:func:`raybrain.connectome.normalise`). Parameters not given take the model's defaults;
``model.prepare`` fills the derived ones (FIC's ``w_IE``) exactly as the simulator does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .models import Model, broadcast_param, get_model

#: relative central-difference step of the numerical Jacobian
JACOBIAN_STEP = 1e-6
#: default grid: this many points from the model's lower G bound to its upper one (extended
#: upwards, doubling, while the top is still stable)
DEFAULT_POINTS = 31
_MAX_DOUBLINGS = 6


@dataclass(frozen=True)
class StabilityPoint:
    """The fixed point's stability at one coupling ``G``.

    ``max_real_eig`` is the largest real part of the Jacobian's eigenvalues (1/s) and
    ``leading_imag_hz`` the imaginary part of that eigenvalue over 2π (Hz; 0 for a real one);
    ``w_IE_ok`` says FIC's ``w_IE`` is finite and > 0 everywhere (True for models without one);
    ``residual`` is the largest |drift| at the fixed point (≈ 0 when it is one); ``stable`` is
    ``max_real_eig < 0 and w_IE_ok``."""

    G: float
    max_real_eig: float
    stable: bool
    w_IE_ok: bool
    leading_imag_hz: float = 0.0
    residual: float = 0.0


def _check_sc(sc) -> np.ndarray:
    sc = np.asarray(sc, dtype=np.float64)
    if sc.ndim != 2 or sc.shape[0] != sc.shape[1] or sc.shape[0] < 1:
        raise ValueError(f"sc must be a square (N, N) matrix, got shape {sc.shape}")
    if not np.all(np.isfinite(sc)):
        raise ValueError("sc contains non-finite values")
    return sc


def _prepared(model: Model, sc: np.ndarray, G, params: Mapping[str, Any] | None):
    """The model's parameters for coupling(s) ``G`` (B values): defaults filled in, shaped to
    ``(B, N)`` and prepared for ``sc`` as :class:`raybrain.integrate.Simulation` does, and the
    fixed point ``(K arrays (B, N))``; a ValueError when the model has none."""
    G = np.atleast_1d(np.asarray(G, dtype=np.float64))
    B, n = G.size, sc.shape[0]
    params = dict(params or {})
    params.pop("G", None)
    shaped = {}
    for k, v in model.params(**params).items():
        a = broadcast_param(k, v, B, n, xp=np) if k != "G" else G.reshape(B, 1)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"parameter {k!r} contains non-finite values")
        shaped[k] = np.broadcast_to(a, (B, n)).astype(np.float64)
    row_sum = np.broadcast_to(sc.sum(axis=1), (B, n))
    with np.errstate(all="ignore"):
        p = model.prepare(shaped, row_sum, xp=np)
        fp = model.fixed_point(p, row_sum)
    if fp is None:
        raise ValueError(f"model {model.name!r} has no known fixed point (its fixed_point() gives None, e.g. rww with "
                         "FIC off, hopf, lanmm): the stable G range is undefined without one")
    p = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (B, n)) for k, v in p.items()}
    fp = tuple(np.broadcast_to(np.asarray(a, dtype=np.float64), (B, n)) for a in fp)
    return p, fp


def _drift_flat(model: Model, sc: np.ndarray, z: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    """The network drift for states ``z`` (M, K·N) (variable-major) with parameters ``p`` whose
    arrays broadcast against (M, N); returns (M, K·N)."""
    K, n = len(model.state_variables), sc.shape[0]
    x = tuple(z[:, k * n:(k + 1) * n] for k in range(K))
    coupling = tuple(x[v] @ sc.T for v in model.coupled_variables)
    with np.errstate(all="ignore"):
        d = model.drift(x, p, coupling)
    return np.concatenate([np.broadcast_to(np.asarray(a, dtype=np.float64), (z.shape[0], n)) for a in d], axis=1)


def jacobian(model, sc, state, p: Mapping[str, Any], step: float = JACOBIAN_STEP) -> np.ndarray:
    """The ``(K·N, K·N)`` Jacobian of the network drift at ``state`` (K arrays (N,) or (1, N), the
    model's state variables) for prepared parameters ``p`` (arrays broadcastable to (1, N)), by
    central differences (module docstring). Rows and columns are variable-major."""
    model = get_model(model)
    sc = _check_sc(sc)
    n = sc.shape[0]
    x0 = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in state])
    m = x0.size
    if m != len(model.state_variables) * n:
        raise ValueError(f"state has {m} values, expected {len(model.state_variables)} state variables × {n} regions")
    h = step * np.maximum(1.0, np.abs(x0))
    z = np.concatenate([x0 + np.diag(h), x0 - np.diag(h)])  # (2m, m)
    p1 = {k: np.asarray(v, dtype=np.float64).reshape(1, -1) if np.ndim(v) else v for k, v in p.items()}
    f = _drift_flat(model, sc, z, p1)
    return ((f[:m] - f[m:]) / (2.0 * h)[:, None]).T


def _point(model, sc, G: float, p, fp, b: int) -> StabilityPoint:
    pb = {k: v[b:b + 1] for k, v in p.items()}
    state = tuple(a[b] for a in fp)
    ok = True
    for name in model.set_by_prepare:  # what FIC solved for must be a finite, positive coupling
        w = pb[name]
        ok = ok and bool(np.all(np.isfinite(w)) and np.all(w > 0))
    x0 = np.concatenate(state)[None]
    if not np.all(np.isfinite(x0)):
        return StabilityPoint(float(G), math.nan, False, ok, math.nan, math.nan)
    residual = float(np.abs(_drift_flat(model, sc, x0, pb)).max())
    J = jacobian(model, sc, state, pb)
    if not np.all(np.isfinite(J)):
        return StabilityPoint(float(G), math.nan, False, ok, math.nan, residual)
    ev = np.linalg.eigvals(J)
    top = ev[np.argmax(ev.real)]
    lam = float(top.real)
    return StabilityPoint(float(G), lam, bool(lam < 0 and ok), ok, float(abs(top.imag)) / (2 * math.pi), residual)


def stability(model, sc, G: float, params: Mapping[str, Any] | None = None) -> StabilityPoint:
    """Stability of the model's fixed point at coupling ``G`` on connectome ``sc`` (used as given)
    with ``params`` (others at the model's defaults; ``G`` in ``params`` is ignored)."""
    model = get_model(model)
    sc = _check_sc(sc)
    _check_g(G)
    p, fp = _prepared(model, sc, [G], params)
    return _point(model, sc, float(G), p, fp, 0)


def _check_g(G) -> None:
    if isinstance(G, bool) or not (isinstance(G, (int, float, np.number)) and math.isfinite(G)):
        raise ValueError(f"G must be a finite number, got {G!r}")


def _points(model, sc, grid, params) -> list[StabilityPoint]:
    p, fp = _prepared(model, sc, grid, params)
    return [_point(model, sc, float(g), p, fp, b) for b, g in enumerate(grid)]


def _grid(model, g_grid) -> np.ndarray:
    if g_grid is None:
        lo, hi = model.parameter("G").bounds
        return np.linspace(lo, hi, DEFAULT_POINTS)
    g = np.asarray(g_grid, dtype=np.float64).reshape(-1)
    if g.size < 1 or not np.all(np.isfinite(g)):
        raise ValueError(f"g_grid must hold at least one finite G, got {g_grid!r}")
    if np.any(np.diff(g) <= 0):
        raise ValueError("g_grid must be strictly increasing")
    return g


def landscape(model, sc, g_grid=None, params: Mapping[str, Any] | None = None):
    """One row per G of ``g_grid`` (default: the model's G bounds, :data:`DEFAULT_POINTS` points):
    columns ``G``, ``max_real_eig`` (1/s), ``leading_imag_hz``, ``stable``, ``w_IE_ok``,
    ``residual`` and, for models with a ``w_IE``, ``w_IE_min``/``w_IE_max`` over regions."""
    import pandas as pd

    model = get_model(model)
    sc = _check_sc(sc)
    grid = _grid(model, g_grid)
    p, fp = _prepared(model, sc, grid, params)
    rows = []
    for b, g in enumerate(grid):
        pt = _point(model, sc, float(g), p, fp, b)
        row = dict(G=pt.G, max_real_eig=pt.max_real_eig, leading_imag_hz=pt.leading_imag_hz, stable=pt.stable,
                   w_IE_ok=pt.w_IE_ok, residual=pt.residual)
        if "w_IE" in p:
            row.update(w_IE_min=float(np.min(p["w_IE"][b])), w_IE_max=float(np.max(p["w_IE"][b])))
        rows.append(row)
    return pd.DataFrame(rows)


def stable_g_range(model, sc, g_grid=None, params: Mapping[str, Any] | None = None,
                   tol: float = 1e-3, *, extend: bool | None = None) -> tuple[float, float]:
    """``(G_low, G_high)``: the contiguous stable interval that starts at the grid's lowest G.

    ``G_low`` is the lowest grid point; ``G_high`` the last stable G before the first unstable one,
    refined by bisection between the last stable and the first unstable grid points until they
    are ``tol`` apart (``G_high`` is the stable end: ``G_high + tol`` is unstable). When every grid
    point is stable, ``G_high`` is the grid's top (the range may go further) unless ``extend``
    (default: True for the default grid, the model's G bounds, else False): the grid is then
    extended, doubling its top up to 64×, until an unstable G is found. ``(nan, nan)`` when the
    lowest grid point is itself unstable."""
    model = get_model(model)
    sc = _check_sc(sc)
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    grid = _grid(model, g_grid)
    pts = _points(model, sc, grid, params)
    if not pts[0].stable:
        return math.nan, math.nan
    lo_g = float(grid[0])
    for _ in range(_MAX_DOUBLINGS if (g_grid is None if extend is None else extend) else 0):
        if not all(pt.stable for pt in pts):
            break
        top = float(grid[-1])
        grid = np.linspace(top, 2 * top if top > 0 else 1.0, DEFAULT_POINTS)[1:]
        pts = [pts[-1]] + _points(model, sc, grid, params)
        grid = np.concatenate([[top], grid])
    first_bad = next((i for i, pt in enumerate(pts) if not pt.stable), None)
    if first_bad is None:
        return lo_g, float(grid[-1])
    a, b = float(grid[first_bad - 1]), float(grid[first_bad])
    while b - a > tol:
        mid = 0.5 * (a + b)
        if stability(model, sc, mid, params).stable:
            a = mid
        else:
            b = mid
    return lo_g, a


def auto_g_bounds(model, sc, params: Mapping[str, Any] | None = None, *, margin: float = 0.95,
                  low: float | None = None, g_grid=None) -> tuple[float, float]:
    """Search bounds ``(low, margin × G_high)`` for G: ``low`` defaults to the model's lower G
    bound and ``G_high`` is :func:`stable_g_range`'s upper edge on ``sc`` (the normalised SC the
    fit uses) with ``params`` (the model's defaults otherwise: regional parameters the search
    varies move the edge, hence the margin). A ValueError when no stable G lies above ``low``."""
    model = get_model(model)
    if isinstance(margin, bool) or not (isinstance(margin, (int, float)) and 0 < margin <= 1):
        raise ValueError(f"margin must be a number in (0, 1], got {margin!r}")
    if low is None:
        low = float(model.parameter("G").bounds[0])
    _check_g(low)
    extend = None
    if g_grid is None:
        lo_b, hi_b = model.parameter("G").bounds
        if low != lo_b:
            g_grid, extend = np.linspace(low, max(hi_b, low + 1.0), DEFAULT_POINTS), True
    g_low, g_high = stable_g_range(model, sc, g_grid, params, extend=extend)
    if math.isnan(g_high):
        raise ValueError(f"model {model.name!r}: the fixed point is already unstable at G = {low:g}; no stable G range "
                         "to search (check the SC normalisation and the model's parameters)")
    high = margin * g_high
    if not high > low:
        raise ValueError(f"model {model.name!r}: the fixed point is stable only up to G = {g_high:.4g}; "
                         f"{margin:g} × that is not above the lower bound {low:g}")
    return float(low), float(high)
