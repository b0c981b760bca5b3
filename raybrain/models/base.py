"""What every model declares: state variables, parameters (units, defaults, bounds), a drift.

A model is a small frozen object; its physics are pure functions over arrays of shape ``(B, N)``
(B parameter sets, N regions). Parameters may be given as scalars, per batch element ``(B,)``,
per region ``(N,)`` or both ``(B, N)``; :func:`broadcast_param` turns each into an array that
broadcasts against ``(B, N)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .._text import did_you_mean as _did_you_mean


@dataclass(frozen=True)
class Parameter:
    """A model parameter: its symbol, default, unit, admissible bounds and meaning."""

    name: str
    default: float
    unit: str
    bounds: tuple[float, float]
    description: str
    regional: bool = True  # may vary per region (else one value per parameter set)


@dataclass(frozen=True)
class StateVariable:
    """A state variable, its initial value and the interval it is clipped to (if any)."""

    name: str
    initial: float
    clip: tuple[float, float] | None = None


class Model:
    """Base class: subclasses fill the class attributes and implement :meth:`drift`.

    Conventions: time in seconds, the drift returns d(state)/dt in 1/s; ``coupling`` is a tuple
    with one network input ``sum_j C_ij x_j`` (before the global coupling G) per entry of
    ``coupled_variables``.
    """

    name: str = ""
    state_variables: tuple[StateVariable, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    coupled_variables: tuple[int, ...] = (0,)  # state variables that drive the network
    bold_input: int = 0  # index of the state variable fed to the hemodynamics
    noise_variables: tuple[int, ...] = ()  # state variables that receive additive noise
    summary_observables: tuple[str, ...] = ()  # observables time-averaged during a run
    #: whether a fused time loop (numba on the CPU, :mod:`raybrain.fused`; CUDA, :mod:`raybrain.cuda`)
    #: integrates this model; the simulator uses it when this is True, else the array path
    fused_path: bool = False

    # -- parameters -----------------------------------------------------------------------------
    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise ValueError(f"model {self.name!r} has no parameter {name!r}{_did_you_mean(name, self.parameter_names)}")

    def params(self, **overrides: Any) -> dict[str, Any]:
        """All parameters with defaults, updated by ``overrides`` (unknown names are an error)."""
        out: dict[str, Any] = {p.name: p.default for p in self.parameters}
        for k, v in overrides.items():
            self.parameter(k)  # raises with a suggestion
            out[k] = v
        return out

    def prepare(self, params: Mapping[str, Any], sc_row_sum, xp=np) -> dict[str, Any]:
        """Derived parameters that depend on the connectome (e.g. FIC); default: unchanged."""
        return dict(params)

    def initial_state(self, batch: int, n: int, xp=np, dtype=np.float64) -> tuple:
        return tuple(xp.full((batch, n), sv.initial, dtype=dtype) for sv in self.state_variables)

    def fixed_point(self, params: Mapping[str, Any], sc_row_sum, xp=np, **kw) -> tuple | None:
        """The state variables at the model's fixed point for prepared ``params`` (arrays
        broadcastable to ``(B, N)``), where it is known in closed form; ``None`` otherwise (the
        simulation then starts from each state variable's ``initial``)."""
        return None

    def drift(self, state: tuple, p: Mapping[str, Any], coupling) -> tuple:  # pragma: no cover
        raise NotImplementedError

    def observables(self, state: tuple, p: Mapping[str, Any], coupling) -> dict[str, Any]:
        """Derived outputs (e.g. firing rates) for the summaries; default none."""
        return {}

    def drift_and_observables(self, state: tuple, p: Mapping[str, Any], coupling):
        """Drift and observables in one pass (models override to share work)."""
        return self.drift(state, p, coupling), self.observables(state, p, coupling)

    def describe(self) -> str:
        rows = [f"{self.name}: " + (self.__doc__ or "").strip().splitlines()[0]]
        for p in self.parameters:
            rows.append(f"  {p.name:<8} {p.default:<10g} {p.unit:<8} [{p.bounds[0]:g}, {p.bounds[1]:g}]  {p.description}")
        return "\n".join(rows)




def broadcast_param(name: str, value, batch: int, n: int, xp=np, dtype=np.float64):
    """Shape a parameter value to broadcast against ``(B, N)``.

    Scalars stay scalars-as-arrays ``(1, 1)``; a 1-D array of length B is per batch element
    ``(B, 1)``; of length N it is per region ``(1, N)``; 2-D must be ``(B, N)``, ``(B, 1)`` or
    ``(1, N)``. When B == N a 1-D array is ambiguous and must be given as 2-D.
    """
    a = xp.asarray(value, dtype=dtype)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        m = a.shape[0]
        if m == batch and m == n and batch != 1:
            raise ValueError(
                f"parameter {name!r}: a 1-D array of length {m} is ambiguous when the batch size equals "
                f"the number of regions ({m}); pass shape ({m}, 1) for per-batch or (1, {m}) for per-region values"
            )
        if m == batch:
            return a.reshape(batch, 1)
        if m == n:
            return a.reshape(1, n)
        if m == 1:
            return a.reshape(1, 1)
        raise ValueError(
            f"parameter {name!r}: 1-D array of length {m} matches neither the batch size B={batch} nor the "
            f"number of regions N={n}"
        )
    if a.ndim == 2 and a.shape[0] in (1, batch) and a.shape[1] in (1, n):
        return a
    raise ValueError(
        f"parameter {name!r}: shape {tuple(a.shape)} does not broadcast to (B, N) = ({batch}, {n}); "
        "use a scalar, (B,), (N,) or (B, N)"
    )
