r"""Euler–Maruyama integration of a batch of whole-brain models, streamed to BOLD.

For state ``x`` (``(B, N)`` per variable), drift ``f`` of the model, network input
``c = C x_coupled`` and per-region noise amplitude ``σ``:

.. math::

    x_{t+1} = \mathrm{clip}\left(x_t + f(x_t, c_t)\,\Delta t + \sigma \sqrt{\Delta t}\,\xi_t\right),
    \qquad \xi_t \sim \mathcal N(0, 1)\ \text{(counter-based, see :mod:`raybrain.random`)}

The neural input of the hemodynamics (e.g. ``S_E``) is averaged over each hemodynamic step
(``bold_dt``, 1 ms by default), the Balloon–Windkessel model is stepped with it, and BOLD is
sampled every TR once the burn-in has passed. Only the BOLD samples and running time-averages
are kept: memory is ``O(B·N·T_bold)``, never the neural trajectory.

A :class:`Simulation` is resumable: :meth:`Simulation.run` continues from the carried
:class:`SimState` (global step counter, neural and hemodynamic state, noise keys, running sums),
so running 30 s then 30 s gives exactly the samples of one 60 s run. Noise is a pure function of
(seed, stream, step, region): a candidate's result does not depend on the batch it ran in.

Two paths compute the same thing: the array path (NumPy, CuPy or JAX, any model; the reference)
and, for every model that declares a scalar drift, the fused kernels generated from it
(:mod:`raybrain.fused`, numba on the CPU; :mod:`raybrain.cuda` on CuPy).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ._backend import asnumpy, get_xp
from .hemodynamics import BalloonWindkessel, bold_signal, bw_derivatives
from .models import Model, broadcast_param, get_model
from .random import normal_pair, stream_keys

NOISE_MODES = ("independent", "common")


@dataclass(frozen=True)
class SimulationSettings:
    """How to simulate: time steps, durations, hemodynamics, noise, precision, backend.

    Times are in seconds. ``duration`` is the recorded time after ``burn_in``. The hemodynamic
    step ``bold_dt`` is rounded to a whole number of neural steps (at least one), and the TR
    must be a whole number of hemodynamic steps.

    ``burn_in`` defaults to 30 s, the hemodynamic transient: linearised about its fixed point, the
    Balloon's flow–signal pair obeys ``s'' + κ s' + γ s = 0``, whose roots have real part ``-κ/2``
    (complex for both conventions), so a disturbance decays as ``exp(-κ t / 2)``: an e-folding time
    of 2/κ = 3.1 s for κ = 0.65 /s (``"rates"``; 1.3 s for ``"time_constants"``), while volume and
    deoxyhaemoglobin relax faster (rate 1/(α τ) ≈ 3.2 /s). 30 s is about 10 e-foldings of the
    slowest mode (a start-up disturbance shrinks to e^{-9.75} ≈ 6·10⁻⁵). The Balloon itself starts
    at the steady state of the initial neural input (:meth:`~raybrain.hemodynamics.BalloonWindkessel.steady_state`),
    so what remains to wash out is the neural model's own relaxation from its initial state and the
    Balloon's response to it.
    """

    duration: float = 60.0
    dt: float = 1e-4
    burn_in: float = 30.0
    tr: float = 0.72
    hemodynamics: str | None = None  # "balloon", "none" (sample the input variable), None: the model's default
    bw_convention: str = "rates"
    bw_constants: str = "friston2003"
    bold_dt: float = 1e-3
    noise: str = "independent"  # or "common" (common random numbers across the batch)
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numpy"
    fused: str = "auto"  # "auto" | "always" | "never"

    def __post_init__(self):
        for name in ("duration", "dt", "tr", "bold_dt"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"simulation setting {name!r} must be a positive number of seconds, got {v!r}")
        if not (math.isfinite(self.burn_in) and self.burn_in >= 0):
            raise ValueError(f"simulation setting 'burn_in' must be >= 0 seconds, got {self.burn_in!r}")
        if self.hemodynamics not in (None, "balloon", "none"):
            raise ValueError(f"simulation setting 'hemodynamics' must be 'balloon' or 'none', got {self.hemodynamics!r}")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"simulation setting 'noise' must be one of {NOISE_MODES}, got {self.noise!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"simulation setting 'dtype' must be 'float32' or 'float64', got {self.dtype!r}")
        if self.fused not in ("auto", "always", "never"):
            raise ValueError(f"simulation setting 'fused' must be 'auto', 'always' or 'never', got {self.fused!r}")
        if self.dt > self.tr:
            raise ValueError(f"simulation setting 'dt' ({self.dt} s) must not exceed the TR ({self.tr} s)")
        BalloonWindkessel(self.bw_convention, self.bw_constants)  # validates the names
        if self.backend not in ("numpy", "cupy"):  # CuPy itself is needed where a Simulation runs, not
            get_xp(self.backend)  # here: a CPU driver holds the settings of a CuPy experiment it never runs
        k_h, k_tr = self.steps_per_bold_step, self.bold_steps_per_tr
        if abs(k_tr * k_h * self.dt - self.tr) > 1e-6 * self.tr:
            raise ValueError(
                f"the TR ({self.tr} s) must be a whole number of hemodynamic steps of {k_h * self.dt:g} s "
                f"(dt={self.dt} s × {k_h}); choose dt/bold_dt dividing the TR"
            )

    def replace(self, **changes) -> "SimulationSettings":
        return dataclasses.replace(self, **changes)

    @property
    def steps_per_bold_step(self) -> int:
        return max(1, int(round(self.bold_dt / self.dt)))

    @property
    def bold_steps_per_tr(self) -> int:
        return max(1, int(round(self.tr / (self.steps_per_bold_step * self.dt))))

    def n_steps(self, seconds: float) -> int:
        return int(round(seconds / self.dt))

    @property
    def hemodynamic_model(self) -> BalloonWindkessel:
        return BalloonWindkessel(self.bw_convention, self.bw_constants)


@dataclass
class SimState:
    """Everything needed to continue a simulation exactly where it stopped.

    ``step`` counts neural steps since t = 0 (it indexes the noise), ``neural`` and
    ``hemo`` are tuples of ``(B, N)`` arrays, ``acc`` the neural input summed since the last
    hemodynamic step, ``sums`` the running sums of the summaries over ``n_summed`` recorded steps.
    """

    step: int
    neural: tuple
    hemo: tuple
    acc: Any
    keys: Any
    sums: dict
    n_summed: int
    diverged: Any

    def to_numpy(self) -> "SimState":
        """A host copy (never a view: the fused path updates its arrays in place)."""
        def c(a):
            return np.array(asnumpy(a), copy=True)
        return SimState(self.step, tuple(c(a) for a in self.neural), tuple(c(a) for a in self.hemo),
                        c(self.acc), c(self.keys), {k: c(v) for k, v in self.sums.items()},
                        self.n_summed, c(self.diverged))

    def take(self, index) -> "SimState":
        """The state of batch elements ``index`` only (a host copy), e.g. the survivors of a
        successive-halving rung; their noise keys come along, so they continue exactly as they
        would have in the full batch."""
        index = np.asarray(index, dtype=np.int64)
        s = self.to_numpy()
        return SimState(s.step, tuple(a[index] for a in s.neural), tuple(a[index] for a in s.hemo), s.acc[index],
                        s.keys[index], {k: v[index] for k, v in s.sums.items()}, s.n_summed, s.diverged[index])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """A flat dict of NumPy arrays (for ``np.savez`` checkpoints)."""
        s = self.to_numpy()
        out = {"step": np.array(s.step), "n_summed": np.array(s.n_summed), "acc": s.acc, "keys": s.keys,
               "diverged": s.diverged}
        out.update({f"neural_{i}": a for i, a in enumerate(s.neural)})
        out.update({f"hemo_{i}": a for i, a in enumerate(s.hemo)})
        out.update({f"sum_{k}": v for k, v in s.sums.items()})
        return out

    @classmethod
    def from_arrays(cls, d: Mapping[str, np.ndarray]) -> "SimState":
        def seq(prefix):
            return tuple(np.asarray(d[k]) for k in sorted((k for k in d if k.startswith(prefix)),
                                                          key=lambda k: int(k[len(prefix):])))
        return cls(int(d["step"]), seq("neural_"), seq("hemo_"), np.asarray(d["acc"]), np.asarray(d["keys"]),
                   {k[4:]: np.asarray(v) for k, v in d.items() if k.startswith("sum_")}, int(d["n_summed"]),
                   np.asarray(d["diverged"]))


@dataclass
class SimResult:
    """BOLD ``(B, T, N)`` of one run (or chunk), sample times, time-averaged summaries, flags."""

    bold: Any
    times: np.ndarray
    means: dict = field(default_factory=dict)  # name -> (B, N) time averages since the burn-in
    diverged: Any = None  # (B,) bool
    wall_s: float = 0.0
    fused: bool = False


class Simulation:
    """A batch of B simulations of one model on one or several connectomes.

    Parameters
    ----------
    model : Model or str
        e.g. ``"rww"`` (FIC on) or ``get_model("rww", fic=False)``.
    sc : array ``(N, N)`` or ``(S, N, N)``
        Connectome(s), used as given (``C_ij``: weight from region j to region i).
    params : mapping
        Model parameters; each a scalar, ``(B,)``, ``(N,)`` or ``(B, N)``. Missing ones take the
        model's defaults.
    settings : SimulationSettings
    batch : int, optional
        B; inferred from the parameter shapes when omitted.
    subject_index : array ``(B,)`` of int, optional
        Which connectome each batch element uses when ``sc`` is ``(S, N, N)``.
    streams : array ``(B,)`` of int, optional
        Noise stream of each batch element (default ``arange(B)``, or all 0 when
        ``settings.noise == "common"``).
    keys : array ``(B,)`` of uint64, optional
        Noise keys of the batch elements, overriding ``stream_keys(settings.seed, streams)``: each
        element draws exactly the noise of its key, so elements of requests with different seeds
        (or noise modes) can share one batch (:mod:`raybrain.evaluator`). With ``state``, the
        state's keys are used and ``keys`` must equal them.
    lanes : int, optional
        Fused path only: batch elements per tile of the fused kernel; default chosen per run by
        :func:`raybrain.fused.choose_lanes`. Every width gives the same results bit for bit, so a
        candidate's outputs do not depend on its batch; 0 (the single-element kernel) differs from
        them in the last bits.
    prepared : mapping, optional
        Instead of ``params``: parameters already prepared for these connectomes, every model
        parameter as ``(B, N)`` float64 (what :attr:`params_host` holds; e.g. rWW's FIC ``w_IE``
        included), used as given — no defaults filled in, no FIC solved again. The coalescing
        evaluator (:mod:`raybrain.evaluator`) merges requests' own prepared parameters this way.
    """

    def __init__(self, model, sc, params: Mapping[str, Any] | None = None,
                 settings: SimulationSettings | None = None, *, batch: int | None = None,
                 subject_index=None, streams=None, state: SimState | None = None, keys=None,
                 lanes: int | None = None, prepared: Mapping[str, Any] | None = None):
        self.model: Model = get_model(model)
        self.settings = settings or SimulationSettings()
        if self.settings.hemodynamics is None:
            self.settings = self.settings.replace(
                hemodynamics=self.model.default_hemodynamics)
        xp = self.xp = get_xp(self.settings.backend)
        self.dtype = np.dtype(self.settings.dtype)
        sc = np.asarray(asnumpy(sc), dtype=np.float64)
        if sc.ndim == 2:
            sc = sc[None]
        if sc.ndim != 3 or sc.shape[1] != sc.shape[2]:
            raise ValueError(f"sc must have shape (N, N) or (S, N, N), got {sc.shape}")
        if not np.all(np.isfinite(sc)):
            raise ValueError("sc contains non-finite values")
        n = self.n_regions = sc.shape[1]
        if prepared is not None and params:
            raise ValueError("pass params or prepared (already prepared parameters), not both")
        params = dict(params or {})
        B = batch if batch is not None else _infer_batch(prepared if prepared is not None else params, n)
        if subject_index is None:
            if sc.shape[0] != 1:
                raise ValueError(f"sc holds {sc.shape[0]} connectomes: pass subject_index of shape ({B},)")
            subject_index = np.zeros(B, dtype=np.int64)
        subject_index = np.asarray(subject_index, dtype=np.int64).reshape(-1)
        if subject_index.shape != (B,) or subject_index.min() < 0 or subject_index.max() >= sc.shape[0]:
            raise ValueError(f"subject_index must have shape ({B},) with values in [0, {sc.shape[0]})")
        self.batch = B
        self.sc = sc
        self.subject_index = subject_index
        if prepared is not None:
            self.params_host = _check_prepared(self.model, prepared, B, n)
        else:
            self.params_host = self._prepare(params, B, n)
        self.params = {k: xp.asarray(v, dtype=self.dtype) for k, v in self.params_host.items()}
        if streams is None:
            streams = np.zeros(B, np.int64) if self.settings.noise == "common" else np.arange(B)
        streams = np.asarray(streams)
        if streams.shape != (B,):
            raise ValueError(f"streams must have shape ({B},), got {streams.shape}")
        self.streams = streams
        self.keys = None if keys is None else _check_keys(keys, B)
        if lanes is not None and (isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer))
                                  or lanes < 0):
            raise ValueError(f"lanes must be a non-negative integer (0: the single-element kernel), got {lanes!r}")
        self.lanes = None if lanes is None else int(lanes)
        if state is not None:  # own copy, on this backend, in this precision
            state = SimState.from_arrays(state.to_arrays())
            state.neural = tuple(xp.asarray(a, dtype=self.dtype) for a in state.neural)
            state.hemo = tuple(xp.asarray(a, dtype=self.hemo_dtype) for a in state.hemo)
            state.acc = xp.asarray(state.acc, dtype=self.dtype)
            state.keys, state.diverged = xp.asarray(state.keys), xp.asarray(state.diverged)
            state.sums = {k: xp.asarray(v) for k, v in state.sums.items()}
            if state.neural[0].shape != (B, n):
                raise ValueError(f"state has shape {state.neural[0].shape}, expected ({B}, {n})")
            if self.keys is not None and not np.array_equal(asnumpy(state.keys), self.keys):
                raise ValueError("keys differ from the noise keys carried by state")
        self.state = state if state is not None else self.initial_state()
        self.use_fused = self._choose_fused()

    # -- state -----------------------------------------------------------------------------------

    def _prepare(self, params: Mapping[str, Any], B: int, n: int) -> dict[str, np.ndarray]:
        """The model's parameters (defaults filled in) broadcast to ``(B, N)``, checked, and
        prepared for the connectomes (e.g. FIC); float64 on the host, for the record."""
        shaped = {}
        for k, v in self.model.params(**params).items():
            a = broadcast_param(k, v, B, n, xp=np)
            if a.shape[1] != 1 and not self.model.parameter(k).regional:
                raise ValueError(f"parameter {k!r} is global (one value per parameter set), got per-region values "
                                 f"of shape {np.shape(v)}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"parameter {k!r} contains non-finite values")
            shaped[k] = a
        row_sum = self.sc.sum(axis=2)[self.subject_index]  # (B, N)
        prepared = self.model.prepare(shaped, row_sum, xp=np)
        return {k: np.broadcast_to(v, (B, n)).astype(np.float64) for k, v in prepared.items()}
    @property
    def hemo_dtype(self):
        """The dtype of the hemodynamic state: float64 on the CPU whatever :attr:`dtype` (a float32
        state rounds the Balloon's increments away: :mod:`raybrain.hemodynamics`, precision); the
        simulation's dtype on CuPy, whose CUDA kernel keeps a float32 Balloon."""
        return self.dtype if self.settings.backend == "cupy" else np.dtype(np.float64)

    def initial_state(self) -> SimState:
        xp, B, n, dt = self.xp, self.batch, self.n_regions, self.dtype
        neural = self.model.initial_state(B, n, xp=xp, dtype=dt)
        # at the model's fixed point where it is known (rWW with FIC), so nothing relaxes at the start
        fp = self.model.fixed_point(self.params_host, self.sc.sum(axis=2)[self.subject_index])
        if fp is not None:
            clips = [sv.clip or (-np.inf, np.inf) for sv in self.model.state_variables]
            neural = tuple(xp.asarray(np.clip(np.broadcast_to(a, (B, n)), *c), dtype=dt) for a, c in zip(fp, clips))
        # the Balloon at the steady state of its initial input (every path starts from this state)
        x0 = neural[self.model.bold_input] if self.settings.hemodynamics == "balloon" else None
        hemo = self.settings.hemodynamic_model.initial_state(B, n, xp=xp, dtype=self.hemo_dtype, x=x0)
        names = [sv.name for sv in self.model.state_variables] + list(self.model.summary_observables)
        sums = {k: xp.zeros((B, n), dtype=np.float64) for k in names}
        return SimState(0, neural, hemo, xp.zeros((B, n), dtype=dt),
                        stream_keys(self.settings.seed, self.streams, xp=xp) if self.keys is None
                        else xp.asarray(self.keys), sums, 0, xp.zeros(B, dtype=bool))

    @property
    def time(self) -> float:
        """Simulated seconds so far (burn-in included)."""
        return self.state.step * self.settings.dt

    def _choose_fused(self) -> bool:
        s = self.settings
        ok = self.model.fused_path and s.backend in ("numpy", "cupy")
        if s.fused == "always" and not ok:
            raise ValueError("fused='always' needs a model with a fused time loop (one that declares "
                             "Model.scalar_drift, e.g. 'rww', 'hopf', 'lanmm') and backend 'numpy' or 'cupy'")
        return ok and s.fused != "never"

    # -- running ---------------------------------------------------------------------------------
    def prepare(self) -> float:
        """Get every compiled kernel the next :meth:`run` will use — from this process's memo, the
        on-disk cache, or a fresh compilation — and return the seconds that took (≈ 0 when they are
        already loaded). Idempotent; neither the state nor any later result changes.

        Fused numba path: the kernel variant :func:`raybrain.fused.run` picks for this batch is
        called for zero steps with the very argument types of :meth:`run`, which compiles (or
        loads) its dispatcher entry. CUDA path: the variant :func:`raybrain.cuda.launch.run_cuda`
        launches is built. Array path: nothing to compile.
        """
        t0 = time.perf_counter()
        if self.use_fused and self.settings.backend == "cupy":
            from .cuda.launch import prepare_kernel

            prepare_kernel(self._kernel_call(0, self.xp)[0])
        elif self.use_fused:
            self._run_fused(0)  # zero steps: the state is copied in and out unchanged
        return time.perf_counter() - t0

    def run(self, duration: float | None = None) -> SimResult:
        """Advance by ``duration`` recorded seconds (default ``settings.duration``); the burn-in is
        run first if it has not been. Returns the BOLD samples of this call only."""
        s = self.settings
        duration = s.duration if duration is None else float(duration)
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
        end = max(self.state.step, s.n_steps(s.burn_in)) + s.n_steps(duration)
        n_steps = end - self.state.step
        t0 = time.perf_counter()
        runner = self._run_array
        if self.use_fused:  # numba on the CPU, the CUDA kernel (raybrain.cuda) on CuPy
            runner = self._run_cuda if s.backend == "cupy" else self._run_fused
        bold, times = runner(n_steps)
        st = self.state
        bad = ~self.xp.isfinite(bold).all(axis=(1, 2)) if bold.shape[1] else self.xp.zeros(self.batch, bool)
        for a in st.neural:
            bad = bad | ~self.xp.isfinite(a).all(axis=1)
        st.diverged = st.diverged | bad
        means = {k: v / max(st.n_summed, 1) for k, v in st.sums.items()}
        return SimResult(bold, times, means, st.diverged.copy(), time.perf_counter() - t0, self.use_fused)

    def _sample_plan(self, n_steps: int):
        """Which hemodynamic steps in the coming ``n_steps`` produce a BOLD sample, and when."""
        k_h, k_tr, m_burn, ms = sample_plan(self.settings, self.state.step, n_steps)
        return k_h, k_tr, m_burn, ms * (k_h * self.settings.dt)

    def _run_fused(self, n_steps: int):
        from .fused import run

        call, times = self._kernel_call(n_steps, np)
        run(call, lanes=self.lanes)
        return self._finish_kernel_call(call), times

    def _run_cuda(self, n_steps: int):
        """The fused CUDA kernel generated for the model (:mod:`raybrain.cuda`) on CuPy arrays; same
        state, same noise, same TR sampling as :meth:`_run_fused` (its CPU harness is held to the
        array path)."""
        from .cuda.launch import run_cuda

        call, times = self._kernel_call(n_steps, self.xp)
        run_cuda(call)
        return self._finish_kernel_call(call), times

    def _kernel_call(self, n_steps: int, xp):
        """The :class:`~raybrain.kernel_call.KernelCall` that advances :attr:`state` by ``n_steps``
        neural steps on ``xp`` arrays (packed copies of the state), and the times of its samples."""
        from .kernel_call import KernelCall

        s, st, B, n, m = self.settings, self.state, self.batch, self.n_regions, self.model
        k_h, k_tr, m_burn, times = self._sample_plan(n_steps)
        dt_ = self.dtype.type
        names = [sv.name for sv in m.state_variables] + list(m.summary_observables)
        call = KernelCall(
            model=m,
            X=xp.ascontiguousarray(xp.stack([xp.asarray(a) for a in st.neural])),
            H=xp.ascontiguousarray(xp.stack([xp.asarray(a) for a in st.hemo])),
            acc=xp.ascontiguousarray(st.acc),
            sums=xp.ascontiguousarray(xp.stack([xp.asarray(st.sums[k]) for k in names])),
            CS=xp.ascontiguousarray(xp.asarray(self.sc.astype(self.dtype))),
            subject_index=self.subject_index,
            PAR=xp.ascontiguousarray(xp.stack([xp.asarray(self.params[k]) for k in m.kernel_parameters], axis=1)),
            keys=xp.ascontiguousarray(st.keys), step0=st.step, n_steps=n_steps, dt=dt_(s.dt), k_h=k_h,
            inv_kh=dt_(1.0 / k_h), dt_h=dt_(k_h * s.dt), k_tr=k_tr, m_burn=m_burn,
            coef=s.hemodynamic_model.coefficients(dt_), bold_on=s.hemodynamics == "balloon",
            bold_out=xp.zeros((B, len(times), n), dtype=self.dtype))
        return call, times

    def _finish_kernel_call(self, call):
        """Take the state a kernel call advanced as :attr:`state`; return its BOLD samples."""
        st, m = self.state, self.model
        k_h, m_burn = call.k_h, call.m_burn
        names = [sv.name for sv in m.state_variables] + list(m.summary_observables)
        n_rec = max(0, st.step + call.n_steps - max(st.step, m_burn * k_h))
        self.state = SimState(st.step + call.n_steps, tuple(call.X), tuple(call.H), call.acc, st.keys,
                              dict(zip(names, call.sums)), st.n_summed + n_rec, st.diverged)
        return call.bold_out

    def _run_array(self, n_steps: int):
        s, st, xp, m = self.settings, self.state, self.xp, self.model
        B, n, p = self.batch, self.n_regions, self.params
        k_h, k_tr, m_burn, times = self._sample_plan(n_steps)
        dtp = self.dtype.type
        dt = dtp(s.dt)
        amp = p["sigma"] * dtp(math.sqrt(s.dt))
        C = xp.asarray(self.sc, dtype=self.dtype)
        single = C.shape[0] == 1
        Cb = C[0] if single else C[xp.asarray(self.subject_index)]
        # einsum's own loops, not BLAS: a row's sum then does not depend on the batch size
        spec = "bj,ij->bi" if single else "bj,bij->bi"
        hm = s.hemodynamic_model
        kappa, gam_h, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = hm.coefficients(dtp)
        n_pairs = (len(m.noise_variables) + 1) // 2
        s_burn = m_burn * k_h  # summaries start with the first hemodynamic step after the burn-in
        x = list(st.neural)
        hemo, acc = st.hemo, st.acc
        sums, n_summed = dict(st.sums), st.n_summed
        out = []
        for step in range(st.step, st.step + n_steps):
            coupling = tuple(xp.einsum(spec, x[v], Cb) for v in m.coupled_variables)
            with np.errstate(all="ignore"):
                xi = []
                for q in range(n_pairs):
                    xi.extend(normal_pair(st.keys, step * n_pairs + q, n, dtype=self.dtype))
                x, obs = euler_maruyama_step(m, x, p, coupling, xi, dt, amp, xp)
            if step + 1 > s_burn:
                for sv, a in zip(m.state_variables, x):
                    sums[sv.name] = sums[sv.name] + a
                for k in m.summary_observables:
                    sums[k] = sums[k] + obs[k]
                n_summed += 1
            if s.hemodynamics == "balloon":
                acc = acc + x[m.bold_input]
                if (step + 1) % k_h == 0:
                    with np.errstate(all="ignore"):
                        # right-hand sides in the simulation's dtype from the rounded state, the
                        # increments accumulated in the (float64) state, as the fused kernel does
                        h = tuple(a.astype(self.dtype) for a in hemo)
                        d = bw_derivatives(*h, acc * dtp(1.0 / k_h), kappa, gam_h, inv_tau, inv_alpha, l1r,
                                           inv_rho, one, xp.exp, xp.log)
                        hemo = tuple(a + dtp(k_h * s.dt) * da for a, da in zip(hemo, d))
                    acc = xp.zeros_like(acc)
                    mm = (step + 1) // k_h
                    if mm % k_tr == 0 and mm > m_burn:
                        with np.errstate(all="ignore"):
                            out.append(bold_signal(hemo[2], hemo[3], V0, k1, k2, k3, one).astype(self.dtype))
            elif (step + 1) % k_h == 0:
                mm = (step + 1) // k_h
                if mm % k_tr == 0 and mm > m_burn:
                    out.append(x[m.bold_input].copy())
        self.state = SimState(st.step + n_steps, tuple(x), hemo, acc, st.keys, sums, n_summed, st.diverged)
        bold = xp.stack(out, axis=1) if out else xp.zeros((B, 0, n), dtype=self.dtype)
        return bold, times


def euler_maruyama_step(model: Model, x, p, coupling, xi, dt, amp, xp):
    """One step of the array path on any array module (module docstring): ``x + f(x, c) dt``, plus
    ``amp ξ_j`` (``amp = σ √dt``) on noise variable ``j``, clipped where the model clips; returns the
    new state (a list like ``x``) and the observables of ``x``. ``dt``, ``amp`` and the clip bounds
    are in the state's precision."""
    drift, obs = model.drift_and_observables(tuple(x), p, coupling)
    new = [a + dt * d for a, d in zip(x, drift)]
    for j, v in enumerate(model.noise_variables):
        new[v] = new[v] + amp * xi[j]
    one = type(dt)(1.0)
    for v, sv in enumerate(model.state_variables):
        if sv.clip is not None:
            new[v] = xp.clip(new[v], one * sv.clip[0], one * sv.clip[1])
    return new, obs


def sample_plan(settings: SimulationSettings, start_step: int, n_steps: int):
    """The TR grid of neural steps ``start_step .. start_step + n_steps``, which every path follows:
    ``(k_h, k_tr, m_burn, ms)``. ``k_h`` neural steps per hemodynamic step, ``k_tr`` hemodynamic
    steps per TR, ``m_burn`` the hemodynamic steps of the burn-in (``⌈burn_in / (k_h dt)⌉``), and
    ``ms`` the indices (1-based, counted from t = 0) of the hemodynamic steps ending in this
    stretch that produce a sample: multiples of ``k_tr`` past the burn-in, taken at
    ``m · k_h · dt`` seconds."""
    s = settings
    k_h, k_tr = s.steps_per_bold_step, s.bold_steps_per_tr
    m_burn = int(math.ceil(s.burn_in / (k_h * s.dt) - 1e-9))
    ms = np.arange(start_step // k_h + 1, (start_step + n_steps) // k_h + 1)
    return k_h, k_tr, m_burn, ms[(ms % k_tr == 0) & (ms > m_burn)]


def _check_prepared(model, prepared: Mapping[str, Any], B: int, n: int) -> dict[str, np.ndarray]:
    """``prepared`` (see :class:`Simulation`) as contiguous ``(B, N)`` float64 arrays; ValueError
    for a missing model parameter, a wrong shape or a non-finite value."""
    missing = [k for k in model.params() if k not in prepared]
    if missing:
        raise ValueError(f"prepared parameters lack {missing[0]!r} (every model parameter, as (B, N))")
    out = {}
    for k, v in prepared.items():
        a = np.asarray(v, dtype=np.float64)
        if a.shape != (B, n):
            raise ValueError(f"prepared parameter {k!r} must have shape ({B}, {n}), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"prepared parameter {k!r} contains non-finite values")
        out[k] = np.ascontiguousarray(a)
    return out


def _check_keys(keys, batch: int) -> np.ndarray:
    """``keys`` as a host ``(batch,)`` uint64 array, or a ValueError saying what is wrong."""
    k = asnumpy(keys)
    if k.shape != (batch,):
        raise ValueError(f"keys must have shape ({batch},) (one noise key per batch element), got {k.shape}")
    if k.dtype != np.uint64:
        raise ValueError(f"keys must be uint64 noise keys (raybrain.random.stream_keys), got dtype {k.dtype}")
    return np.array(k, copy=True)


def _infer_batch(params: Mapping[str, Any], n: int) -> int:
    sizes: dict[int, list[str]] = {}
    for k, v in params.items():
        a = np.shape(asnumpy(v)) if not np.isscalar(v) else ()
        if (len(a) == 2 and a[0] != 1) or (len(a) == 1 and a[0] not in (1, n)):
            sizes.setdefault(a[0], []).append(k)
    if len(sizes) > 1:
        detail = "; ".join(f"B={b} from {', '.join(map(repr, ks))}" for b, ks in sorted(sizes.items()))
        raise ValueError(f"parameters disagree on the batch size: {detail}")
    return next(iter(sizes)) if sizes else 1


def simulate(model, sc, params: Mapping[str, Any] | None = None, settings: SimulationSettings | None = None,
             **kwargs) -> SimResult:
    """Run a fresh batch for ``settings.burn_in + settings.duration`` seconds; return its BOLD."""
    return Simulation(model, sc, params, settings, **kwargs).run()
