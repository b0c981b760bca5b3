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
from .maths import array_functions


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
    #: what turns the ``bold_input`` variable into the sampled signal by default: ``"balloon"``
    #: (Balloon–Windkessel BOLD) or ``"none"`` (sample the variable itself, e.g. an M/EEG proxy)
    default_hemodynamics: str = "balloon"

    # -- the scalar declaration every backend is derived from ------------------------------------
    #: the drift of one region as a pure, literal-free scalar function (see :meth:`scalar_drift`);
    #: ``None``: the model defines :meth:`drift_and_observables` over arrays only and has no fused path
    scalar_drift = None
    #: the observables :meth:`scalar_drift` returns after the drift, in order (a superset of
    #: ``summary_observables``)
    scalar_observables: tuple[str, ...] = ()
    #: parameters :meth:`prepare` adds (e.g. a row sum of the connectome); in the packed parameter
    #: order they follow ``parameters`` (:attr:`kernel_parameters`)
    derived_parameters: tuple[str, ...] = ()
    #: the maths :meth:`scalar_drift` takes as trailing arguments, by name: ``"exp"``, ``"log"``,
    #: ``"phi"`` (``z / (1 - exp(-z))``); every backend passes its own implementation in its precision
    kernel_functions: tuple[str, ...] = ()
    #: parameters a search usually varies from candidate to candidate: the fused kernels read them per
    #: element in every variant, never as batch-wide constants (whose patterns would multiply variants)
    searched_parameters: frozenset = frozenset({"G", "sigma"})

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

    @property
    def set_by_prepare(self) -> tuple[str, ...]:
        """Parameters :meth:`prepare` overwrites (e.g. rWW's ``w_IE`` under FIC): a value given for
        them is not used. Default none."""
        return ()

    def initial_state(self, batch: int, n: int, xp=np, dtype=np.float64) -> tuple:
        return tuple(xp.full((batch, n), sv.initial, dtype=dtype) for sv in self.state_variables)

    def fixed_point(self, params: Mapping[str, Any], sc_row_sum, xp=np, **kw) -> tuple | None:
        """The state variables at the model's fixed point for prepared ``params`` (arrays
        broadcastable to ``(B, N)``), where it is known in closed form; ``None`` otherwise (the
        simulation then starts from each state variable's ``initial``)."""
        return None

    def bold_variant(self) -> Model | None:
        """The same model observed through hemodynamics (BOLD) on the same trajectory: the BOLD
        half of a composite spectral + FC fit (:mod:`raybrain.objective`); ``None`` when the
        model has none (the default)."""
        return None

    # scalar_drift(x_0, ..., x_{S-1}, c_0, ..., c_{C-1}, p_0, ..., p_{P-1}, one, *functions)
    #     -> (dx_0/dt, ..., dx_{S-1}/dt, o_0, ..., o_{O-1})
    # state scalars in ``state_variables`` order, network inputs in ``coupled_variables`` order,
    # parameters in :attr:`kernel_parameters` order, ``one`` (1 in the working precision: the
    # function holds no numeric literal, so it runs unchanged in float32 on every backend) and the
    # functions named by ``kernel_functions``; observables in ``scalar_observables`` order. The same
    # function runs on NumPy/CuPy/JAX arrays (:meth:`drift_and_observables`), is inlined into the
    # numba kernels (:mod:`raybrain.fused`) and translated to C for CUDA (:mod:`raybrain.cuda`).

    @property
    def fused_path(self) -> bool:
        """Whether a fused time loop (numba on the CPU, :mod:`raybrain.fused`; CUDA,
        :mod:`raybrain.cuda`) integrates this model: it does wherever :attr:`scalar_drift` is declared."""
        return self.scalar_drift is not None

    @property
    def kernel_parameters(self) -> tuple[str, ...]:
        """The packed parameter order of every fused kernel: ``parameters`` then ``derived_parameters``."""
        return self.parameter_names + tuple(self.derived_parameters)

    def drift(self, state: tuple, p: Mapping[str, Any], coupling) -> tuple:
        return self.drift_and_observables(state, p, coupling)[0]

    def observables(self, state: tuple, p: Mapping[str, Any], coupling) -> dict[str, Any]:
        """Derived outputs (e.g. firing rates) for the summaries."""
        return self.drift_and_observables(state, p, coupling)[1]

    def drift_and_observables(self, state: tuple, p: Mapping[str, Any], coupling):
        """Drift (a tuple like ``state``) and observables (a dict) in one pass over arrays, from
        :attr:`scalar_drift` (a model without one overrides this)."""
        if self.scalar_drift is None:  # pragma: no cover - a model must declare one or the other
            raise NotImplementedError(f"model {self.name!r} declares neither scalar_drift nor drift_and_observables")
        out = type(self).scalar_drift(*state, *coupling, *(p[k] for k in self.kernel_parameters),
                                      _one_like(state[0]), *array_functions(self.kernel_functions))
        S = len(state)
        return tuple(out[:S]), dict(zip(self.scalar_observables, out[S:]))

    def describe(self) -> str:
        rows = [f"{self.name}: " + (self.__doc__ or "").strip().splitlines()[0]]
        for p in self.parameters:
            rows.append(f"  {p.name:<8} {p.default:<10g} {p.unit:<8} [{p.bounds[0]:g}, {p.bounds[1]:g}]  {p.description}")
        return "\n".join(rows)




def _one_like(x):
    """1 in the precision of ``x`` (an array or a scalar): a NumPy scalar of its dtype, or a Python
    float (a weak type for JAX tracers and Python scalars)."""
    dt = getattr(x, "dtype", None)
    try:
        return np.dtype(dt).type(1.0) if dt is not None else 1.0
    except TypeError:  # a dtype NumPy does not know
        return 1.0


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
