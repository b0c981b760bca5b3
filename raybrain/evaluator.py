r"""Coalesced evaluation: many objectives' batches simulated as one batch, scored apart.

What is coalesced
-----------------
:func:`evaluate_many` takes evaluation requests (:class:`EvalRequest`: an
:class:`~raybrain.objective.Objective`, a batch ``theta`` and the noise arguments of
:meth:`Objective.evaluate <raybrain.objective.Objective.evaluate>`) that may come from different
runs, subjects, seeds, noise modes and batch sizes. Requests whose simulations are *compatible*
run as one :class:`~raybrain.integrate.Simulation`: the same model (class and options, e.g. rWW
with FIC on), the same number of regions N and the same
:class:`~raybrain.integrate.SimulationSettings` except ``seed`` and ``noise`` (that is: ``dt``,
``duration``, ``burn_in``, ``tr``, resolved ``hemodynamics``, ``bw_convention``,
``bw_constants``, ``bold_dt``, ``dtype``, ``backend`` and ``fused``). ``seed`` and ``noise`` only
choose each element's noise key, which the batch carries per element. The batch stacks the
distinct connectomes ``(S, N, N)`` with a ``subject_index``, concatenates the requests' prepared
model parameters row by row (FIC already solved per request), and runs once; its BOLD, time
averages and divergence flags are split back per request and each request is scored by its own
objective (its own empirical target, loss and parametrisation).

Determinism
-----------
Every record equals, field for field (``==`` on floats, float32 and float64), what
``request.objective.evaluate(theta, seed=, repeats=, first_stream=, duration=)`` returns when called
alone in the same process, except ``wall_s`` and ``compile_s`` (timings). (The fused kernel's choice depends on
the numba thread count, so :func:`remote_evaluate` sends the caller's and the actor reproduces
the caller's own ``evaluate``.) Why:

* noise is counter-based (:mod:`raybrain.random`): an element's noise is a pure function of its
  key, the global step and the region, and each element carries its own key
  (``stream_keys(seed, stream)`` of *its* request: ``Simulation(keys=...)``);
* parameters are per row: each request's :class:`~raybrain.integrate.Simulation` is built by its
  own ``Objective.simulation`` (exactly as ``evaluate`` builds it) and its prepared parameters are
  copied row for row into the batch, never re-derived;
* the array path (NumPy, any model) computes each row with element-wise operations and an einsum
  that does not reduce across rows, so a row does not depend on the other rows;
* the fused rWW kernel (:mod:`raybrain.fused`) picks its variant from the whole batch (tile
  width by its cost model, the pattern of batch-wide uniform parameters), but every tiled variant
  computes each element with the same operations in the same order, so its results do not depend
  on the variant (``tests/test_batch_invariance.py``); only the single-element kernel
  (``lanes=0``, never chosen by default) differs in the last bits. With ``exact=True`` (default)
  requests are still grouped by the
  variant they would get alone, each group runs with that variant forced (``Simulation(lanes=)``),
  and a memory chunk whose parameters happen to be more uniform than its group's is completed with
  a few duplicate rows whose results are dropped (a guarantee that no longer rests on it on the
  default path). ``exact=False`` lets the cost model choose for the merged batch: the same
  results on the default path, and faster on CPU.

On CuPy (untested here: no GPU): the array path's einsum may go to cuBLAS, whose summation order
can depend on the batch shape, so the per-element guarantee is to be checked on the device.

Memory
------
A group larger than the memory budget runs in chunks of consecutive rows (results are identical,
see above). Bytes per batch element, with ``s`` the item size (4 or 8), ``T`` the BOLD frames
``ceil((burn_in + duration) / tr) + 1``, ``V`` the state variables, ``O`` the time-averaged
observables and ``P`` the prepared parameters::

    s·N·(2T + V + 5) + 8·N·(V + O) + (8 + s)·N·P + 8·N·12 + [array path, S > 1] s·N² + 32

(BOLD samples plus the stacked copy, neural + 4 hemodynamic variables + input accumulator,
float64 running sums, the float64 host and working copies of the parameters, per-step
temporaries of the noise and drift, each element's gathered connectome ``C[subject_index]``), and
a fixed ``S·N²·(8 + s)`` for the connectomes. The budget is ``memory_budget`` bytes if given,
else 2 GiB on NumPy and half of the free device memory (driver free + CuPy pool free) on CuPy.
Scoring runs per request, as ``evaluate`` does.

The Ray side
------------
:class:`Evaluator` (an asyncio actor: one per GPU, or one per node without GPUs) gathers the
requests of concurrent callers for ``window_ms`` or until ``max_batch`` batch elements, runs
:func:`evaluate_many` in a worker thread and answers each caller with its own records.
:func:`get_evaluator` finds (or starts) the actor of the caller's node by name;
:func:`remote_evaluate` is the client call, returning exactly
``raybrain.experiment.objective_from_json(text, subject, fidelity).evaluate(...)``.

One decision, and an evaluator that can always be placed
--------------------------------------------------------
Whether the evaluator is on, the array backend, and what each trial holds are decided once, by
the driver, from the cluster's resources (:func:`plan`: ``auto`` means CuPy when the *cluster* has
GPUs, whatever the driver itself can import), and stamped into the config every trial receives
(:meth:`Plan.stamp`): a worker never decides again. (Before, the driver on a CPU head without CuPy
chose "no evaluator" and gave each trial 0.25 GPU, while trials on a GPU worker with CuPy asked
for an evaluator holding a whole GPU that those trials already held: it never started.)

The evaluators' GPUs are reserved by construction rather than by a placement group (which must be
sized before the nodes exist, while an autoscaler adds them as the trials ask): while the
evaluator is on, trials hold no GPU, and a node with G GPUs gets exactly G evaluators
(``raybrain-evaluator-<node>-<i>``, ``i < G``) of ``num_gpus=1``, pinned to it
(``NodeAffinitySchedulingStrategy``, hard) — so what they reserve is what the node has, and each
one fits. The driver starts them on every node it sees before the first trial
(:func:`start_evaluators`) and waits until each answers; one that cannot run (no usable CuPy on a
GPU node: :func:`check_backend`) fails the experiment at once with its node's name. On a node that
joins later the first trial starts it (:func:`get_evaluator`); its GPU is free by the same rule.
Callers wait for an evaluator at most ``timeout_s`` (something outside raybrain holding the GPU)
and then raise, never forever. A trial on a node without GPUs in a CuPy experiment uses another
node's evaluator.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ._backend import asnumpy
from .integrate import SimResult, Simulation

CPU_MEMORY_BUDGET = 2 * 1024 ** 3  # bytes of simulation working memory per launch on NumPy
GPU_MEMORY_FRACTION = 0.5  # of the free device memory on CuPy (the rest: scoring, other users)
NAMESPACE = "raybrain"
ACTOR_PREFIX = "raybrain-evaluator-"


# -- requests ---------------------------------------------------------------------------------
@dataclass
class EvalRequest:
    """One ``objective.evaluate(theta, seed=, repeats=, first_stream=, duration=)`` call, deferred.

    ``candidates`` numbers the rows of ``theta`` for independent noise (default ``arange(B)``, see
    :meth:`~raybrain.objective.Objective.simulation`). ``threads`` is the numba thread count whose
    fused-kernel choice the result must reproduce (default: this process's); a remote caller
    passes its own so that the evaluator reproduces the caller's local ``evaluate`` exactly.
    """

    objective: Any
    theta: Any
    seed: int | None = None
    repeats: int = 1
    first_stream: int = 0
    candidates: Any = None
    duration: float | None = None
    threads: int | None = None

    @property
    def size(self) -> int:
        """Batch elements (rows of ``theta`` × repeats)."""
        return int(np.shape(self.theta)[0]) * int(self.repeats)

    def simulation(self) -> Simulation:
        """The request's own batch, exactly as ``objective.evaluate`` would build it (not run)."""
        return self.objective.simulation(self.theta, seed=self.seed, repeats=self.repeats,
                                         first_stream=self.first_stream, duration=self.duration,
                                         candidates=self.candidates)


@dataclass
class _Prepared:
    """What the batch needs of one request's own (unrun) simulation; its arrays are not kept."""

    request: EvalRequest
    theta: np.ndarray
    model: Any
    settings: Any
    n_regions: int
    use_fused: bool
    dtype: np.dtype
    xp: Any
    batch: int
    sc: np.ndarray  # (S_r, N, N) float64
    subject_index: np.ndarray
    params_host: dict  # prepared (B, N) float64 parameters
    keys: np.ndarray  # (B,) uint64 noise keys
    group: tuple  # compatibility key
    variant: tuple  # fused-kernel variant it would get alone (exact mode), else ()
    lanes: int | None


def _model_key(model) -> tuple:
    return (type(model).__module__, type(model).__qualname__, repr(sorted(vars(model).items())))


def compat_key(sim: Simulation) -> tuple:
    """What two simulations must share to run in one batch: model class and options, N, the fused
    flag and every setting except ``seed`` and ``noise`` (which only choose the noise keys)."""
    return (_model_key(sim.model), sim.n_regions, sim.use_fused,
            sim.settings.replace(seed=0, noise="independent"))


def _fused_par(model, params: dict, dtype) -> np.ndarray:
    """The packed ``(B, P, N)`` parameters of the fused kernels (``model.kernel_parameters`` order)."""
    return np.stack([np.asarray(params[k], dtype=dtype) for k in model.kernel_parameters], axis=1)


def _variant(sim: Simulation, threads: int | None) -> tuple[tuple, int | None]:
    """The fused-kernel variant ``sim`` gets when run alone, and the lanes to force it with."""
    if not sim.use_fused:
        return ("array",), None
    from .fused import choose_lanes

    lanes = int(choose_lanes(sim.dtype, sim.batch, sim.subject_index, threads=threads))
    if lanes == 0:
        return ("single",), 0
    from .fused import uniform_parameters

    PAR = _fused_par(sim.model, sim.params_host, sim.dtype)
    u = uniform_parameters(sim.model, PAR)
    values = PAR[0, :, 0][np.array(u, dtype=bool)].tobytes()
    return ("tiled", lanes, u, values), lanes


def _prepare(req: EvalRequest, exact: bool) -> _Prepared:
    if not isinstance(req, EvalRequest):
        raise TypeError(f"expected an EvalRequest, got {type(req).__name__}")
    theta = req.objective.parametrisation.check(req.theta)
    sim = req.simulation()
    variant, lanes = _variant(sim, req.threads) if exact else ((), None)
    return _Prepared(req, theta, sim.model, sim.settings, sim.n_regions, sim.use_fused, sim.dtype, sim.xp,
                     sim.batch, sim.sc, sim.subject_index, sim.params_host, asnumpy(sim.state.keys).astype(np.uint64),
                     compat_key(sim), variant, lanes)


# -- memory -----------------------------------------------------------------------------------
def default_memory_budget(backend: str = "numpy") -> int:
    """Bytes of simulation working memory for one launch: 2 GiB on NumPy; on CuPy
    ``GPU_MEMORY_FRACTION`` of the device's free memory plus the free blocks of CuPy's pool."""
    if backend == "cupy":  # pragma: no cover - needs a GPU
        import cupy as cp

        free, _total = cp.cuda.runtime.memGetInfo()
        return int(GPU_MEMORY_FRACTION * (free + cp.get_default_memory_pool().free_bytes()))
    return CPU_MEMORY_BUDGET


def bytes_per_element(sim, n_connectomes: int = 1) -> int:
    """Estimated simulation memory of one batch element of ``sim``'s kind (a :class:`Simulation`;
    the formula is in the module docstring)."""
    s = sim.settings
    n, it = sim.n_regions, np.dtype(s.dtype).itemsize
    frames = int(math.ceil((s.burn_in + s.duration) / s.tr - 1e-9)) + 1
    V = len(sim.model.state_variables)
    O = len(sim.model.summary_observables)
    P = len(sim.params_host)
    b = it * n * (2 * frames + V + 5) + 8 * n * (V + O) + (8 + it) * n * P + 8 * n * 12 + 32
    if n_connectomes > 1 and not sim.use_fused:
        b += it * n * n
    return int(b)


def chunk_size(sim, n_connectomes: int, budget: int) -> int:
    """Batch elements per launch under ``budget`` bytes (at least 1)."""
    n, it = sim.n_regions, np.dtype(sim.settings.dtype).itemsize
    fixed = n_connectomes * n * n * (8 + it)
    return max(1, int((budget - fixed) // bytes_per_element(sim, n_connectomes)))


# -- the coalesced run ------------------------------------------------------------------------
class _Rows:
    """The rows of a set of compatible requests, side by side (request-major)."""

    def __init__(self, items: list[_Prepared]):
        self.items = items
        first = items[0]
        self.model, self.settings, self.n = first.model, first.settings, first.n_regions
        self.use_fused, self.dtype = first.use_fused, first.dtype
        self.lanes = first.lanes
        scs, seen, index = [], {}, []
        for it in items:
            local = []
            for c in it.sc:  # (S_r, N, N) float64
                h = hashlib.blake2b(np.ascontiguousarray(c).view(np.uint8), digest_size=16).digest()
                if h not in seen:
                    seen[h] = len(scs)
                    scs.append(c)
                local.append(seen[h])
            index.append(np.asarray(local, dtype=np.int64)[it.subject_index])
        self.sc = np.stack(scs)
        self.subject_index = np.concatenate(index)
        self.params = {k: np.concatenate([it.params_host[k] for it in items]) for k in first.params_host}
        self.keys = np.concatenate([it.keys for it in items])
        self.offsets = np.cumsum([0] + [it.batch for it in items])
        self.size = int(self.offsets[-1])
        self.variant = items[0].variant
        self.PAR = _fused_par(self.model, self.params, self.dtype) if self.variant[:1] == ("tiled",) else None

    def completion(self, rows: np.ndarray) -> np.ndarray:
        """Extra rows (results dropped) that make the uniform-parameter pattern of ``rows`` that of
        the whole group, so the tiled fused kernel compiles the same arithmetic (exact mode)."""
        if self.PAR is None:
            return np.zeros(0, np.int64)
        names, searched = self.model.kernel_parameters, self.model.searched_parameters
        want = self.variant[2]
        extra: list[int] = []
        for q, u in enumerate(want):
            if u or names[q] in searched:  # hoisted, or never hoisted whatever the rows
                continue
            sub = self.PAR[np.concatenate([rows, extra]).astype(np.int64), q, :]
            if np.any(sub != sub[0, 0]):
                continue
            differs = np.flatnonzero(np.any(self.PAR[:, q, :] != sub[0, 0], axis=1))
            extra.append(int(differs[0]))  # exists: the group is not uniform in q
        return np.asarray(extra, dtype=np.int64)

    def run(self, rows: np.ndarray) -> tuple[SimResult, int, float]:
        """Simulate batch elements ``rows`` (+ completion rows appended, their number returned) as
        one Simulation; the result's first ``len(rows)`` rows are those of ``rows``. Also returns
        the seconds spent getting the compiled kernel (:meth:`Simulation.prepare`)."""
        extra = self.completion(rows)
        rows = np.concatenate([rows, extra])
        subj = self.subject_index[rows]
        used, local = np.unique(subj, return_inverse=True)
        # the requests' own prepared parameters, row for row (not re-prepared from the merged batch)
        sim = Simulation(self.model, self.sc[used], settings=self.settings, batch=len(rows),
                         subject_index=local.reshape(-1), keys=self.keys[rows], lanes=self.lanes,
                         prepared={k: v[rows] for k, v in self.params.items()})
        compile_s = sim.prepare()
        return sim.run(), len(extra), compile_s


def _take(a, sl):
    return a[sl].copy()


def _cat(xp, parts):
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)


def evaluate_many(requests: Sequence[EvalRequest], *, memory_budget: int | None = None, exact: bool = True,
                  launches: list | None = None) -> list[list[dict[str, Any]]]:
    """Evaluate ``requests`` with as few simulation launches as possible; one list of records per
    request, each equal to ``request.objective.evaluate(...)`` alone (``wall_s`` apart).

    ``memory_budget``: bytes of simulation working memory per launch (default
    :func:`default_memory_budget` of the backend). ``exact``: reproduce each request's standalone
    fused-kernel variant (see the module docstring). ``launches``: if a list, one dict per
    simulation launch is appended (``rows``, ``requests``, ``padding``, ``wall_s``).
    """
    prepared = [_prepare(r, exact) for r in requests]
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prepared):
        groups.setdefault((p.group, p.variant), []).append(i)
    out: list[list[dict] | None] = [None] * len(prepared)
    for members in groups.values():
        rows = _Rows([prepared[i] for i in members])
        first = prepared[members[0]]
        budget = default_memory_budget(first.settings.backend) if memory_budget is None else int(memory_budget)
        size = chunk_size(first, len(rows.sc), budget)
        if rows.PAR is not None:  # room for completion rows
            size = max(1, size - sum(1 for u in rows.variant[2] if not u))
        pieces: list[list] = [[] for _ in members]
        walls, compiles = np.zeros(len(members)), np.zeros(len(members))
        for a in range(0, rows.size, size):
            b = min(a + size, rows.size)
            t0 = time.perf_counter()
            res, padding, compile_s = rows.run(np.arange(a, b))
            dt = time.perf_counter() - t0 - compile_s
            if launches is not None:
                n_req = int(np.sum((rows.offsets[:-1] < b) & (rows.offsets[1:] > a)))
                launches.append({"rows": b - a, "requests": n_req, "padding": padding, "wall_s": dt})
            for j, _ in enumerate(members):
                lo, hi = max(a, rows.offsets[j]), min(b, rows.offsets[j + 1])
                if lo >= hi:
                    continue
                sl = slice(lo - a, hi - a)
                pieces[j].append((res, sl))
                walls[j] += dt * (hi - lo) / (b - a)
                compiles[j] += compile_s * (hi - lo) / (b - a)
                if hi == rows.offsets[j + 1]:  # the request is complete: score it, drop its rows
                    out[members[j]] = _score(prepared[members[j]], pieces[j], walls[j], compiles[j])
                    pieces[j] = []
    return out  # type: ignore[return-value]


def _score(p: _Prepared, pieces: list, wall: float, compile_s: float = 0.0) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    xp = p.xp
    first = pieces[0][0]
    bold = _cat(xp, [_take(r.bold, sl) for r, sl in pieces])
    means = {k: _cat(xp, [_take(r.means[k], sl) for r, sl in pieces]) for k in first.means}
    diverged = _cat(xp, [_take(r.diverged, sl) for r, sl in pieces])
    res = SimResult(bold, first.times, means, diverged, wall, first.fused)
    records = p.request.objective.score(p.theta, bold, res, repeats=p.request.repeats, wall_s=0.0)
    per = (wall + time.perf_counter() - t0) / max(len(records), 1)
    for r in records:
        r["wall_s"] = per
        r["compile_s"] = compile_s / max(len(records), 1)
    return records


# -- the Ray actor ----------------------------------------------------------------------------
def _numba_threads() -> int | None:
    try:
        import numba

        return int(numba.get_num_threads())
    except Exception:  # pragma: no cover - numba is a dependency
        return None


def make_spec(text: str, subject: str, fidelity, theta, *, seed: int | None = None, repeats: int = 1,
              first_stream: int = 0, candidates=None, duration: float | None = None) -> dict:
    """A serialisable request: the objective named by (experiment JSON text, subject, fidelity)."""
    return {"experiment": text, "subject": subject, "fidelity": fidelity,
            "theta": np.asarray(theta, dtype=np.float64), "seed": seed, "repeats": int(repeats),
            "first_stream": int(first_stream), "candidates": candidates, "duration": duration,
            "threads": _numba_threads()}


def resolve(spec) -> EvalRequest:
    """An :class:`EvalRequest` from a spec of :func:`make_spec` (objective built and cached by
    ``raybrain.experiment.objective_from_json``), or a spec holding an ``objective`` directly, or a request."""
    if isinstance(spec, EvalRequest):
        return spec
    spec = dict(spec)
    obj = spec.pop("objective", None)
    if obj is None:
        from .experiment import objective_from_json

        obj = objective_from_json(spec.pop("experiment"), spec.pop("subject"), spec.pop("fidelity"))
    else:
        for k in ("experiment", "subject", "fidelity"):
            spec.pop(k, None)
    return EvalRequest(obj, **spec)


class Evaluator:
    """Gathers concurrent evaluation requests and runs them coalesced (an asyncio Ray actor).

    ``await evaluate(spec)`` queues one request (a :func:`make_spec` dict, a dict with an
    ``objective``, or an :class:`EvalRequest`) and returns its records. A batching loop takes the
    first queued request, keeps gathering for ``window_ms`` or until ``max_batch`` batch elements
    (candidates × repeats), then runs :func:`evaluate_many` on them in its one worker thread
    (requests arriving meanwhile form the next batch). A failing batch is retried request by
    request, so one bad request fails only its own caller. Usable without Ray (plain asyncio).

    ``backend``: the array backend the experiment simulates with (the driver's :func:`plan`); given,
    the evaluator checks at start that it can simulate with it here (:func:`check_backend`), so a GPU
    node without a usable CuPy fails at once, with its name, instead of at the first request.
    """

    def __init__(self, window_ms: float = 20.0, max_batch: int = 4096, memory_budget: int | None = None,
                 exact: bool = True, backend: str | None = None):
        if not (window_ms >= 0 and max_batch >= 1):
            raise ValueError(f"window_ms must be >= 0 and max_batch >= 1, got {window_ms!r} and {max_batch!r}")
        if backend is not None:
            check_backend(backend)
        self.backend = backend
        self.window_s = float(window_ms) / 1000.0
        self.max_batch = int(max_batch)
        self.memory_budget = memory_budget
        self.exact = bool(exact)
        self._queue: asyncio.Queue | None = None
        self._task = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raybrain-evaluator")
        self.batches: list[dict] = []  # one per gathered batch
        self.launches: list[dict] = []  # one per simulation launch

    async def evaluate(self, spec) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._loop())
        fut = loop.create_future()
        await self._queue.put((spec, fut))
        return await fut

    async def ready(self) -> dict:
        """Where it runs: ``node`` (Ray node id), ``gpus`` (the GPU ids Ray gave it) and ``backend``."""
        try:
            import ray

            ctx = ray.get_runtime_context()
            return {"node": ctx.get_node_id(), "gpus": [str(g) for g in ray.get_gpu_ids()], "backend": self.backend}
        except Exception:  # without Ray
            return {"node": None, "gpus": [], "backend": self.backend}

    async def stats(self) -> dict:
        """Gathered batches and simulation launches so far."""
        return {"batches": list(self.batches), "launches": list(self.launches),
                "requests": sum(b["requests"] for b in self.batches)}

    async def reset_stats(self) -> None:
        self.batches.clear()
        self.launches.clear()

    @staticmethod
    def _size(spec) -> int:
        try:
            if isinstance(spec, EvalRequest):
                return spec.size
            return int(np.shape(spec["theta"])[0]) * int(spec.get("repeats", 1))
        except Exception:
            return 1

    async def _loop(self):
        loop = asyncio.get_running_loop()
        q = self._queue
        while True:
            batch = [await q.get()]
            n = self._size(batch[0][0])
            deadline = loop.time() + self.window_s
            while n < self.max_batch:
                try:
                    item = q.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(q.get(), left)
                    except asyncio.TimeoutError:
                        break
                batch.append(item)
                n += self._size(item[0])
            try:
                results = await loop.run_in_executor(self._pool, self._run, [s for s, _ in batch])
            except Exception as e:  # pragma: no cover - _run answers per request; never leave a caller hanging
                results = [e] * len(batch)
            for (_, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _run(self, specs: list) -> list:
        t0 = time.perf_counter()
        reqs: list = []
        for s in specs:
            try:
                reqs.append(resolve(s))
            except Exception as e:
                reqs.append(e)
        ok = [i for i, r in enumerate(reqs) if not isinstance(r, BaseException)]
        out: list = list(reqs)
        launches: list = []
        try:
            for i, recs in zip(ok, evaluate_many([reqs[i] for i in ok], memory_budget=self.memory_budget,
                                                 exact=self.exact, launches=launches)):
                out[i] = recs
        except Exception:
            launches = []
            for i in ok:  # find the culprit: each request alone
                try:
                    out[i] = evaluate_many([reqs[i]], memory_budget=self.memory_budget, exact=self.exact,
                                           launches=launches)[0]
                except Exception as e:
                    out[i] = e
        self.launches.extend(launches)
        self.batches.append({"requests": len(specs), "elements": sum(self._size(s) for s in specs),
                             "launches": len(launches), "wall_s": time.perf_counter() - t0})
        return out


# -- the plan: one decision, at the driver ----------------------------------------------------
GPU_BACKEND_ENV = "RAYBRAIN_GPU_BACKEND"  # read by plan() only, at the driver
START_TIMEOUT_S = 300.0  # the longest a caller waits for an evaluator to start before it says why


def slots(node: Mapping[str, float], backend: str | None, trial_cpu: float = 0.0) -> tuple[int, int]:
    """``(actors, GPUs each)``: the evaluators a node hosts, from its Ray resources alone
    (``{"CPU": 4, "GPU": 1}``). The driver (:func:`start_evaluators`) and every trial
    (:func:`get_evaluator`) apply this one rule.

    A node with G GPUs: G evaluators, each holding one GPU (``num_gpus=1``). A node without GPUs:
    none if the experiment simulates with CuPy (a trial there, if any, uses a GPU node's evaluator)
    or if the node cannot host a trial (fewer CPUs than ``trial_cpu``, e.g. a head advertising
    ``CPU: 0``: evaluators serve the trials of their own node); otherwise one, holding nothing.
    """
    gpus = int(node.get("GPU", 0) or 0)
    if gpus >= 1:
        return gpus, 1
    if backend == "cupy" or float(node.get("CPU", 0) or 0) < float(trial_cpu):
        return 0, 0
    return 1, 0


@dataclass(frozen=True)
class Plan:
    """The driver's decision for one experiment on one cluster (:func:`plan`).

    ``backend``: the array backend of every simulation (``numpy`` or ``cupy``, never ``auto``).
    ``evaluator``: whether population runs and the held-out stage simulate through the evaluator
    actors. ``gpus``: whether the experiment simulates on the cluster's GPUs. ``trial``: the
    resources every Tune trial holds (``{"cpu": .., "gpu": ..}``, for ``tune.with_resources``).
    ``why``: the rule that decided, in words.
    """

    backend: str
    evaluator: bool
    gpus: bool
    trial: dict
    why: str

    def stamp(self, cfg) -> str:
        """``cfg`` as JSON with the decision written in (``simulation.backend`` resolved,
        ``resources.evaluator`` ``on`` or ``off``): what every trial receives, so that no worker
        decides again from what its own process can import."""
        sim = cfg.simulation.model_copy(update={"backend": self.backend})
        res = cfg.resources.model_copy(update={"evaluator": "on" if self.evaluator else "off"})
        return cfg.model_copy(update={"simulation": sim, "resources": res}).model_dump_json()

    def evaluators(self, node: Mapping[str, float]) -> tuple[int, int]:
        """``(actors, GPUs each)`` on a node with Ray resources ``node`` (:func:`slots`); none when
        the evaluator is off."""
        if not self.evaluator:
            return 0, 0
        return slots(node, self.backend, trial_cpu=float(self.trial["cpu"]))


def plan(cfg, cluster_resources: Mapping[str, float], *, gpu_backend: str | None = None) -> Plan:
    """Decide, once and at the driver, how ``cfg`` runs on a cluster with ``cluster_resources``
    (``ray.cluster_resources()``): the simulation backend, whether the evaluator is on, and what
    each trial holds. ``run_experiment`` stamps the decision into the config every trial receives
    (:meth:`Plan.stamp`); trials and evaluators never re-decide.

    The rule:

    * The cluster **has GPUs** if ``cluster_resources`` counts any, or if the experiment asks GPUs
      for its trials (``resources.gpu > 0``: an autoscaling cluster such as ``cluster/aws.yaml``
      starts its GPU workers on demand, so none may be up when the driver starts). What the
      driver's own process can import plays no part: the driver is typically a CPU head without
      CuPy in front of GPU workers that have it.
    * ``simulation.backend``: ``numpy`` and ``cupy`` stay; ``auto`` is ``cupy`` if the cluster has
      GPUs, else ``numpy``. ``gpu_backend`` (default ``$RAYBRAIN_GPU_BACKEND``, else ``cupy``) is
      what ``auto`` becomes on a GPU cluster; ``numpy`` there is for tests on the fake GPUs of
      ``ray.cluster_utils.Cluster``: the NumPy evaluator stands in for CuPy, the rest of the plan
      unchanged. The experiment **simulates on GPUs** if the cluster has GPUs and
      ``simulation.backend`` is ``auto`` or ``cupy``.
    * ``resources.evaluator``: ``on`` and ``off`` stay; ``auto`` is on if the experiment simulates
      on GPUs or with CuPy, unless the loss is a composite spectral + FC one (the evaluator does
      not run those).
    * Each trial holds ``resources.cpu`` CPUs and ``resources.gpu`` GPUs, but **no GPU when the
      evaluator is on**: every GPU then belongs to its evaluator (see "The Ray side" in the module
      docstring: this is what lets every evaluator be placed). Trial-mode trials, which keep their
      simulator state in the trial, then simulate in their own process on their node's GPU without
      holding it in Ray's accounting.

    If the plan says CuPy and a GPU node cannot use it, the evaluators' start fails at once with
    the node's name (:func:`start_evaluators`, :func:`check_backend`) rather than waiting.
    """
    res = cfg.resources
    backend = cfg.simulation.backend
    gpu_backend = gpu_backend or os.environ.get(GPU_BACKEND_ENV) or "cupy"
    if gpu_backend not in ("cupy", "numpy"):
        raise ValueError(f"${GPU_BACKEND_ENV} must be 'cupy' or 'numpy', got {gpu_backend!r}")
    seen = float(cluster_resources.get("GPU", 0) or 0)
    has_gpus = seen > 0 or res.gpu > 0
    why = [f"the cluster {'has' if seen > 0 else 'shows no'} GPUs ({seen:g})"
           + (f" and trials ask for {res.gpu:g} GPU each" if res.gpu > 0 else "")]
    if backend == "auto":
        backend = gpu_backend if has_gpus else "numpy"
        why.append(f"simulation.backend auto -> {backend}")
    on_gpus = has_gpus and cfg.simulation.backend in ("auto", "cupy")
    composite = cfg.spectral and cfg.fits_fc
    if res.evaluator == "auto":
        evaluator = (on_gpus or backend == "cupy") and not composite
        why.append(f"resources.evaluator auto -> {'on' if evaluator else 'off'}"
                   + (" (composite spectral + FC loss)" if composite and (on_gpus or backend == "cupy") else ""))
    else:
        evaluator = res.evaluator == "on"
    trial = {"cpu": float(res.cpu), "gpu": 0.0 if evaluator else float(res.gpu)}
    if evaluator:
        why.append("trials hold no GPU: each GPU is its evaluator's")
    return Plan(backend=backend, evaluator=bool(evaluator), gpus=bool(on_gpus), trial=trial, why="; ".join(why))


def check_backend(backend: str) -> None:
    """Raise a RuntimeError that says why this process cannot simulate with ``backend`` (``cupy``:
    CuPy imports, sees a CUDA device and runs a kernel); nothing for ``numpy``."""
    if backend != "cupy":
        return
    from . import _backend

    cp = _backend._cupy()
    why = None
    if cp is None:
        why = "CuPy cannot be imported"
    else:
        try:
            if int(cp.cuda.runtime.getDeviceCount()) < 1:
                why = "CuPy sees no CUDA device"
            else:
                float(cp.asarray([1.0]).sum())
        except Exception as e:  # noqa: BLE001 - any failure means: not usable
            why = f"CuPy is not usable ({type(e).__name__}: {e})"
    if why:
        raise RuntimeError(f"{_where()}: the experiment simulates with CuPy (simulation.backend as the driver "
                           f"resolved it) but {why} here. Install raybrain with its gpu extra "
                           f"(pip install 'raybrain[gpu]') on every GPU node (Ray's GPU images carry no CuPy), "
                           f"or set simulation.backend: numpy")


def _where() -> str:
    import socket

    try:
        import ray

        if ray.is_initialized():
            return f"node {ray.get_runtime_context().get_node_id()} ({socket.gethostname()})"
    except Exception:  # noqa: BLE001
        pass
    return socket.gethostname()


# -- the Ray actors ---------------------------------------------------------------------------
_CLASSES: dict = {}
_HANDLES: dict = {}
_READY: set = set()
_NODE_RES: dict = {}


def _remote_class(num_gpus: int):
    import ray

    if num_gpus not in _CLASSES:
        _CLASSES[num_gpus] = ray.remote(num_cpus=0, num_gpus=num_gpus, max_concurrency=1000)(Evaluator)
    return _CLASSES[num_gpus]


def evaluator_name(node_id: str, index: int = 0) -> str:
    return f"{ACTOR_PREFIX}{node_id}-{index}"


def _node_resources(node: str) -> dict:
    import ray

    if node not in _NODE_RES:
        _NODE_RES[node] = next((dict(n.get("Resources", {})) for n in ray.nodes() if n.get("NodeID") == node), {})
    return _NODE_RES[node]


def _node_gpus(node: str) -> int:
    return int(_node_resources(node).get("GPU", 0) or 0)


def _actor(node: str, index: int, gpus: int, namespace: str, lifetime: str | None, options: dict):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = evaluator_name(node, index)
    key = (namespace, name)
    if key not in _HANDLES:
        _HANDLES[key] = _remote_class(1 if gpus else 0).options(
            name=name, namespace=namespace, get_if_exists=True, lifetime=lifetime,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)).remote(**options)
    return _HANDLES[key]


def _forget(key) -> None:
    _HANDLES.pop(key, None)
    _READY.discard(key)


def _not_ready(name: str, timeout_s: float, err: BaseException | None) -> str:
    if err is None:
        return (f"the evaluator {name} did not start within {timeout_s:g} s. While the evaluator is on, "
                f"raybrain's trials hold no GPU, so something else holds its node's GPU (another job or "
                f"actor: see `ray status`), or the node is gone")
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()
    for i in range(len(lines) - 1, -1, -1):  # the root cause: the last exception line and what follows
        if re.match(r"^\w[\w.]*(Error|Exception)\b[^:]*:", lines[i]):
            lines = lines[i:]
            break
    return f"the evaluator {name} could not start: {' '.join(' '.join(lines).split())[-2000:]}"


def _wait_ready(key, handle, timeout_s: float):
    """``handle`` once its actor answers; a RuntimeError saying why if it dies or is not placed
    within ``timeout_s`` (then it is killed, so it cannot take the GPU later)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    if key in _READY:
        return handle
    try:
        ray.get(handle.ready.remote(), timeout=timeout_s)
    except GetTimeoutError:
        _forget(key)
        try:
            ray.kill(handle)
        except Exception:  # noqa: BLE001
            pass
        raise RuntimeError(_not_ready(key[1], timeout_s, None)) from None
    except RayActorError as e:
        _forget(key)
        raise RuntimeError(_not_ready(key[1], timeout_s, e)) from None
    _READY.add(key)
    return handle


def _evaluator_names(namespace: str) -> list[str]:
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a.get("namespace") == namespace and a.get("name", "").startswith(ACTOR_PREFIX))


def get_evaluator(*, index: int | None = None, namespace: str = NAMESPACE, lifetime: str | None = None,
                  backend: str | None = None, timeout_s: float = START_TIMEOUT_S, **options):
    """The evaluator actor of this node, started if there is none and waited for until it answers:
    ``raybrain-evaluator-<node id>-<i>``.

    Which evaluators a node has is :func:`slots` of its resources: on a node with G GPUs one per
    GPU (``num_gpus=1`` each; ``index`` picks one, default the caller's worker id modulo G), on a
    node without GPUs one (``num_gpus=0``), or, when ``backend`` is ``cupy``, none: the caller then
    gets the evaluator of another node (a RuntimeError if no node has one). It reserves no CPU
    (``num_cpus=0``): its callers hold theirs while they wait for it. It is pinned to its node
    (``NodeAffinitySchedulingStrategy``, not soft). ``backend`` (the experiment's, resolved by the
    driver) is checked by a new evaluator as it starts (:func:`check_backend`).

    Never waits forever: an evaluator that dies as it starts, or is not placed within
    ``timeout_s`` seconds, raises a RuntimeError that says why (see :func:`plan` for why, with the
    evaluator on, its GPU is free).

    Cleanup: one started here from the driver is owned by the driver and ends with its job; one
    started from a worker (a Tune trial, which may end before the others it serves, e.g. on a node
    an autoscaler added after the driver started the others) is ``lifetime="detached"`` unless
    ``lifetime`` says otherwise, and outlives the job until :func:`shutdown_evaluators`. The driver
    can avoid detached ones on the nodes it sees by calling :func:`start_evaluators` first.
    ``options`` go to :class:`Evaluator` when it is created (``window_ms``, ``max_batch``,
    ``memory_budget``, ``exact``) and are ignored when it exists. Handles are cached per process.
    """
    import ray

    ctx = ray.get_runtime_context()
    node = ctx.get_node_id()
    count, gpus = slots(_node_resources(node), backend)
    if count == 0:  # a node without GPUs in a CuPy experiment: a GPU node's evaluator
        names = _evaluator_names(namespace)
        if not names:
            raise RuntimeError(f"node {node} has no GPU and the experiment simulates with CuPy: its trials use "
                               f"the evaluator of a GPU node, but no node with a GPU has one (none has "
                               f"joined the cluster?)")
        key = (namespace, names[hash(ctx.get_worker_id()) % len(names)])
        if key not in _HANDLES:
            _HANDLES[key] = ray.get_actor(key[1], namespace=namespace)
        return _wait_ready(key, _HANDLES[key], timeout_s)
    if index is None:
        index = (hash(ctx.get_worker_id()) % count) if gpus else 0
    if gpus and not 0 <= int(index) < count:
        raise ValueError(f"index must be in [0, {count}) on this node, got {index}")
    key = (namespace, evaluator_name(node, int(index)))
    if lifetime is None and key not in _HANDLES:
        worker = getattr(ctx, "worker", None)
        if worker is not None and worker.mode != ray.SCRIPT_MODE:
            lifetime = "detached"
    if backend is not None:
        options = {**options, "backend": backend}
    return _wait_ready(key, _actor(node, int(index), gpus, namespace, lifetime, options), timeout_s)


def start_evaluators(plan: Plan | None = None, *, namespace: str = NAMESPACE, timeout_s: float = START_TIMEOUT_S,
                     **options) -> list:
    """From the driver, before any trial: the evaluators of every alive node (``plan.evaluators``
    of its resources; without a plan :func:`slots` with no backend: one per GPU, or one per node
    without GPUs), owned by the driver so they end with its job, each pinned to its node. Waits
    until all answer; if one dies as it starts (e.g. no usable CuPy on a GPU node) or is not placed
    within ``timeout_s``, kills those it started and raises a RuntimeError naming each failure.
    Trials then find them with :func:`get_evaluator`; nodes that join later get theirs from their
    first trial."""
    import ray

    backend = plan.backend if plan is not None else None
    if backend is not None:
        options = {**options, "backend": backend}
    started = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        node = n["NodeID"]
        res = _NODE_RES.setdefault(node, dict(n.get("Resources", {})))
        count, gpus = plan.evaluators(res) if plan is not None else slots(res, None)
        for i in range(count):
            key = (namespace, evaluator_name(node, i))
            started.append((key, _actor(node, i, gpus, namespace, None, options)))
    refs = [h.ready.remote() for _, h in started]
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    failures = []
    for (key, h), ref in zip(started, refs):
        if ref not in done:
            failures.append(_not_ready(key[1], timeout_s, None))
            continue
        try:
            ray.get(ref)
            _READY.add(key)
        except Exception as e:  # noqa: BLE001 - died as it started
            failures.append(_not_ready(key[1], timeout_s, e))
    if failures:
        for key, h in started:
            _forget(key)
            try:
                ray.kill(h)
            except Exception:  # noqa: BLE001
                pass
        raise RuntimeError(f"{len(failures)} of {len(started)} evaluators did not start:\n" + "\n".join(failures))
    return [h for _, h in started]


def shutdown_evaluators(namespace: str = NAMESPACE) -> int:
    """Kill every evaluator actor in ``namespace`` (detached ones outlive their creator); returns how many."""
    import ray

    n = 0
    for name in _evaluator_names(namespace):
        try:
            ray.kill(ray.get_actor(name, namespace=namespace))
            n += 1
        except ValueError:
            pass
    for k in [k for k in _HANDLES if k[0] == namespace]:
        _forget(k)
    return n


def remote_evaluate(text: str, subject: str, fidelity, theta, *, seed: int | None = None, repeats: int = 1,
                    first_stream: int = 0, candidates=None, duration: float | None = None,
                    evaluator=None, backend: str | None = None) -> list[dict[str, Any]]:
    """``_objective(text, subject, fidelity).evaluate(theta, seed=, repeats=, first_stream=)`` through
    this node's :class:`Evaluator` (coalesced with concurrent callers); the same records.
    ``backend``: the experiment's (resolved) backend, for :func:`get_evaluator`."""
    import ray
    from ray.exceptions import RayActorError

    spec = make_spec(text, subject, fidelity, theta, seed=seed, repeats=repeats, first_stream=first_stream,
                     candidates=candidates, duration=duration)
    if evaluator is not None:
        return ray.get(evaluator.evaluate.remote(spec))
    try:
        return ray.get(get_evaluator(backend=backend).evaluate.remote(spec))
    except RayActorError:  # a cached handle of an evaluator that has gone: find or start it again
        _HANDLES.clear()
        _READY.clear()
        return ray.get(get_evaluator(backend=backend).evaluate.remote(spec))
