"""Peer simulators for benchmark workload W1 (reduced Wong–Wang E–I, Deco et al. 2014; N regions;
dt 0.1 ms; 60 s simulated; BOLD on).

Each peer is exposed as

    run_<peer>(sc, duration_s, dt_ms, batch, bold, seed) -> dict

returning a JSON-serialisable record::

    {"tool": "<name> <version>", "B": batch, "N": N, "dt_ms": dt_ms, "sim_s": simulated seconds,
     "bold": bold, "wall_s": simulation wall time (compile excluded), "compile_s": warm-up/JIT time,
     "region_steps_per_s": B*N*steps/wall_s, "model": what the peer ran, "note": caveats}

and ``available_peers()`` lists the peers whose packages import here. None of the peers is a
raybrain dependency; install them in a separate environment (see benchmarks/README.md).

Peers
-----
- ``neurolib``  — ``neurolib.models.ww.WWModel`` (the reduced Wong–Wang E–I model of Deco et al.
  2014 with w_EI = 1; numba Euler loop, OU input noise, no delays here). No batching: B
  simulations run one after another. BOLD = neurolib's Balloon–Windkessel model.
- ``tvboptim`` — ``tvboptim.experimental.network_dynamics`` with its ``WongWangExcInh`` dynamics
  (TVB's ReducedWongWangExcInh ported to JAX; time in ms), ``LinearCoupling`` on S_e through a
  ``DenseGraph``, ``AdditiveNoise``, ``Euler`` solver with ``block_size`` (streaming noise), batch
  via ``jax.vmap`` over G and noise keys. BOLD = tvboptim's own streaming HRF-convolution BOLD
  (``streaming_hrf_bold`` of an ``HRFBold`` monitor, TR 720 ms); with bold=False a mean-S_e
  reducer keeps memory bounded. float32 (JAX default).
- ``vbjax`` — vbjax has no reduced Wong–Wang model (it ships JR, MPR, BVEP, DCM, dopamine), so
  this peer runs vbjax's stochastic Heun step (``vbjax.make_sde``) and Balloon–Windkessel monitor
  (``vbjax.make_bold``, stepped at 1 ms on the 1-ms mean of S_E) on a reduced Wong–Wang drift
  written here from the published equations (Deco et al. 2014). Batch via ``jax.vmap``. float32.
- ``tvb`` — tvb-library's ``Simulator`` with ``ReducedWongWangExcInh``, Linear coupling,
  ``EulerStochastic`` and the ``Bold`` monitor. Single simulation only (B must be 1) and slow:
  it simulates ``min(duration_s, TVB_MAX_SIM_S)`` seconds and region_steps_per_s is computed from
  the steps actually simulated (the record's "sim_s" is what was simulated; "note" says so).

Common settings: Deco 2014 parameters (w_EE 1.4, w_IE 1, I0 0.382 nA, J_NMDA 0.15 nA, ...),
global coupling G spread over the batch (G_b = G0 * (0.75 + 0.5 * b / max(B-1, 1)), G0 = 1 with the
SC as given), small additive noise, zero conduction delays, BOLD sampled at TR 0.72 s.
"""

from __future__ import annotations

import math
import time
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

import numpy as np

TR_MS = 720.0
G0 = 1.0
TVB_MAX_SIM_S = 5.0
WARMUP_S = 0.72  # one TR: enough to trigger every JIT compile

# Deco et al. 2014 defaults, seconds / Hz / nA (science reference §1).
DECO = dict(
    a_E=310.0, b_E=125.0, d_E=0.16, a_I=615.0, b_I=177.0, d_I=0.087,
    tau_E=0.100, tau_I=0.010, gamma=0.641, W_E=1.0, W_I=0.7, I0=0.382,
    J_NMDA=0.15, w_EE=1.4, w_EI=1.0, w_IE=1.0,
)  # fmt: skip


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _check_sc(sc) -> np.ndarray:
    sc = np.asarray(sc, dtype=np.float64)
    if sc.ndim != 2 or sc.shape[0] != sc.shape[1]:
        raise ValueError(f"sc: expected a square (N, N) matrix, got shape {sc.shape}")
    if not np.all(np.isfinite(sc)):
        raise ValueError("sc: contains non-finite values")
    return sc


def _g_values(batch: int) -> np.ndarray:
    if batch < 1:
        raise ValueError(f"batch: must be >= 1, got {batch}")
    return G0 * (0.75 + 0.5 * np.arange(batch) / max(batch - 1, 1))


def _record(tool, batch, n, dt_ms, sim_s, bold, wall, compile_s, steps, model, note):
    return {
        "tool": tool,
        "B": int(batch),
        "N": int(n),
        "dt_ms": float(dt_ms),
        "sim_s": float(sim_s),
        "bold": bool(bold),
        "wall_s": round(float(wall), 4),
        "compile_s": round(float(compile_s), 4),
        "region_steps_per_s": float(batch * n * steps / wall),
        "model": model,
        "note": note,
    }


# --------------------------------------------------------------------------------------------
# neurolib
# --------------------------------------------------------------------------------------------


def _neurolib_once(sc, duration_ms, dt_ms, G, bold, seed):
    from neurolib.models.ww import WWModel

    n = sc.shape[0]
    model = WWModel(Cmat=sc, Dmat=np.zeros((n, n)), seed=seed)
    model.params["dt"] = dt_ms
    model.params["duration"] = duration_ms
    model.params["K_gl"] = float(G)
    model.params["signalV"] = 0.0  # no conduction delays
    model.params["sigma_ou"] = 0.01
    chunk = int(round(TR_MS / dt_ms)) * max(1, int(2000.0 // TR_MS))  # whole TRs, ~1.4 s
    model.run(bold=bold, chunkwise=True, chunksize=chunk)
    return model


def run_neurolib(sc, duration_s, dt_ms=0.1, batch=1, bold=True, seed=0):
    """neurolib WWModel (reduced Wong–Wang E–I), B sequential runs (neurolib does not batch)."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    sc = _check_sc(sc)
    n = sc.shape[0]
    gs = _g_values(batch)
    t0 = time.perf_counter()
    _neurolib_once(sc, WARMUP_S * 1000.0 * 2, dt_ms, gs[0], bold, seed)  # numba JIT
    compile_s = time.perf_counter() - t0
    steps = int(round(duration_s * 1000.0 / dt_ms))
    t0 = time.perf_counter()
    for b in range(batch):
        m = _neurolib_once(sc, duration_s * 1000.0, dt_ms, gs[b], bold, seed + b)
    wall = time.perf_counter() - t0
    finite = bool(np.all(np.isfinite(m.outputs["se"]))) if "se" in m.outputs else None
    return _record(
        f"neurolib {_version('neurolib')}", batch, n, dt_ms, duration_s, bold, wall, compile_s, steps,
        "neurolib.models.ww.WWModel (reduced Wong-Wang E-I, Deco 2014; w_EI fixed 1; Euler; OU noise)",
        f"B runs sequentially (no batching in neurolib); chunkwise=True; no delays; BOLD = neurolib "
        f"Balloon-Windkessel on r_exc; compile_s = warm-up run incl. numba JIT; last run finite={finite}",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# tvboptim
# --------------------------------------------------------------------------------------------


def _tvboptim_sim(sc, n_steps, dt_ms, bold, batch):
    """Build a jitted, vmapped simulator f(G[B], keys[B]) -> small output (BOLD or mean S_e)."""
    import jax
    import jax.numpy as jnp
    from tvboptim.experimental.network_dynamics import Network, prepare
    from tvboptim.experimental.network_dynamics.coupling import LinearCoupling
    from tvboptim.experimental.network_dynamics.dynamics.tvb import WongWangExcInh
    from tvboptim.experimental.network_dynamics.graph import DenseGraph
    from tvboptim.experimental.network_dynamics.noise import AdditiveNoise
    from tvboptim.experimental.network_dynamics.solvers import Euler
    from tvboptim.observations.tvb_monitors import HRFBold, SubSampling, streaming_hrf_bold

    tr_steps = int(round(TR_MS / dt_ms))
    dyn = WongWangExcInh(G=G0, VARIABLES_OF_INTEREST=("S_e",))
    net = Network(
        dynamics=dyn,
        coupling={"instant": LinearCoupling(incoming_states="S_e", G=1.0)},
        graph=DenseGraph(jnp.asarray(sc)),
        noise=AdditiveNoise(sigma=1e-3, key=jax.random.key(0)),
    )
    if bold:
        monitor = HRFBold(period=TR_MS, downsample=SubSampling(period=4.0))
        reduce = streaming_hrf_bold(monitor, dt_ms)
    else:

        def _init(template, _n):
            return jnp.zeros_like(template)

        def _update(acc, block):
            return acc + block.sum(axis=0)

        def _finalize(acc):
            return acc / n_steps

        reduce = (_init, _update, _finalize)
    solver = Euler(block_size=tr_steps)
    sim, config = prepare(net, solver, t0=0.0, t1=n_steps * dt_ms, dt=dt_ms, reduce=reduce)

    def one(G, key):
        cfg = jax.tree.map(lambda x: x, config)
        cfg.dynamics.G = G
        cfg.noise.key = key
        return sim(cfg)

    return jax.jit(jax.vmap(one))


def run_tvboptim(sc, duration_s, dt_ms=0.1, batch=1, bold=True, seed=0):
    """tvboptim WongWangExcInh network, vmapped over B (G and noise key differ per member)."""
    import jax

    sc = _check_sc(sc)
    n = sc.shape[0]
    tr_steps = int(round(TR_MS / dt_ms))
    n_tr = max(1, math.ceil(duration_s * 1000.0 / TR_MS - 1e-9))
    steps = n_tr * tr_steps  # streaming BOLD needs whole TRs
    sim_s = steps * dt_ms / 1000.0
    gs = jax.numpy.asarray(_g_values(batch), dtype=jax.numpy.float32)
    keys = jax.random.split(jax.random.key(seed), batch)

    t0 = time.perf_counter()
    f = _tvboptim_sim(sc, steps, dt_ms, bold, batch).lower(gs, keys).compile()  # ahead-of-time
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(gs, keys))
    wall = time.perf_counter() - t0
    finite = bool(np.all(np.isfinite(np.asarray(out))))
    return _record(
        f"tvboptim {_version('tvboptim')} (jax {_version('jax')})", batch, n, dt_ms, sim_s, bold, wall,
        compile_s, steps,
        "tvboptim network_dynamics WongWangExcInh (TVB ReducedWongWangExcInh in JAX; w_EI fixed 1)",
        f"jax.vmap over B, jit, Euler(block_size={tr_steps}) with streaming noise, AdditiveNoise, "
        f"no delays, float32, device {jax.devices()[0].platform}; BOLD = streaming HRFBold (HRF "
        f"convolution, TR {TR_MS:g} ms); duration rounded up to whole TRs; compile_s = jit lower+compile "
        f"(ahead of time); output finite={finite}",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# vbjax
# --------------------------------------------------------------------------------------------


def _rww_drift_jax(x, p):
    """Reduced Wong–Wang E–I drift (Deco et al. 2014), seconds; x = (S_E, S_I) stacked (2, N)."""
    import jax.numpy as jnp

    S_E, S_I = x[0], x[1]
    c = p["C"] @ S_E
    I_E = DECO["W_E"] * DECO["I0"] + DECO["w_EE"] * DECO["J_NMDA"] * S_E + p["G"] * DECO["J_NMDA"] * c - DECO["w_IE"] * S_I
    I_I = DECO["W_I"] * DECO["I0"] + DECO["w_EI"] * DECO["J_NMDA"] * S_E - S_I

    def H(I, a, b, d):
        y = a * I - b
        small = jnp.abs(y) < 1e-6
        ys = jnp.where(small, 1.0, y)
        return jnp.where(small, 1.0 / d + 0.5 * y, ys / -jnp.expm1(-d * ys))

    dSE = -S_E / DECO["tau_E"] + (1.0 - S_E) * DECO["gamma"] * H(I_E, DECO["a_E"], DECO["b_E"], DECO["d_E"])
    dSI = -S_I / DECO["tau_I"] + H(I_I, DECO["a_I"], DECO["b_I"], DECO["d_I"])
    return jnp.stack([dSE, dSI])


def _vbjax_sim(sc, n_bold_steps, sub, dt_ms, tr_every, bold):
    import jax
    import jax.numpy as jnp
    import vbjax as vb

    n = sc.shape[0]
    dt_s = dt_ms / 1000.0
    C = jnp.asarray(sc, dtype=jnp.float32)
    step, _loop = vb.make_sde(dt_s, _rww_drift_jax, 0.003, adhoc=lambda x, _p: jnp.clip(x, 0.0, 1.0))
    bold_buf0, bold_step, bold_sample = vb.make_bold((n,), sub * dt_s, vb.bold_default_theta)

    def one(G, key):
        p = {"C": C, "G": G}
        x0 = jnp.full((2, n), 0.1, dtype=jnp.float32)

        def inner(x, z):
            x = step(x, z, p)
            return x, x[0]

        def outer(carry, i):
            x, buf = carry
            z = jax.random.normal(jax.random.fold_in(key, i), (sub, 2, n))
            x, se = jax.lax.scan(inner, x, z)
            if bold:
                buf = bold_step(buf, se.mean(axis=0))
                _, y = bold_sample(buf)
            else:
                y = se.mean(axis=0)
            return (x, buf), y

        _, ys = jax.lax.scan(outer, (x0, bold_buf0), jnp.arange(n_bold_steps))
        return ys[tr_every - 1 :: tr_every]  # BOLD (or mean S_E) at each TR

    return jax.jit(jax.vmap(one))


def run_vbjax(sc, duration_s, dt_ms=0.1, batch=1, bold=True, seed=0):
    """vbjax stochastic Heun + Balloon–Windkessel on a reduced Wong–Wang drift written here."""
    import jax

    sc = _check_sc(sc)
    n = sc.shape[0]
    sub = max(1, int(round(1.0 / dt_ms)))  # neural steps per 1-ms BOLD step
    n_bold_steps = int(math.ceil(duration_s * 1000.0 / (sub * dt_ms) - 1e-9))
    steps = n_bold_steps * sub
    sim_s = steps * dt_ms / 1000.0
    tr_every = int(round(TR_MS / (sub * dt_ms)))
    gs = jax.numpy.asarray(_g_values(batch), dtype=jax.numpy.float32)

    keys = jax.random.split(jax.random.key(seed), batch)
    t0 = time.perf_counter()
    f = _vbjax_sim(sc, n_bold_steps, sub, dt_ms, tr_every, bold).lower(gs, keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(gs, keys))
    wall = time.perf_counter() - t0
    finite = bool(np.all(np.isfinite(np.asarray(out))))
    return _record(
        f"vbjax {_version('vbjax')} (jax {_version('jax')})", batch, n, dt_ms, sim_s, bold, wall,
        compile_s, steps,
        "reduced Wong-Wang E-I drift (Deco 2014) written in benchmarks/peers.py; vbjax has no rWW",
        f"vbjax.make_sde stochastic Heun step (2 drift evals/step) + clip to [0,1], jax.vmap over B, "
        f"float32, device {jax.devices()[0].platform}; BOLD = vbjax.make_bold Balloon-Windkessel "
        f"stepped every {sub} neural steps on mean S_E; compile_s = jit lower+compile (ahead of time); "
        f"output finite={finite}",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# TVB (tvb-library)
# --------------------------------------------------------------------------------------------


def _tvb_sim(sc, sim_ms, dt_ms, G, bold, seed):
    from tvb.datatypes.connectivity import Connectivity
    from tvb.simulator import coupling, integrators, models, monitors, noise, simulator

    n = sc.shape[0]
    conn = Connectivity(
        weights=sc.copy(),
        tract_lengths=np.zeros((n, n)),
        region_labels=np.array([f"r{i}" for i in range(n)]),
        centres=np.zeros((n, 3)),
        speed=np.array([np.inf]),
    )
    conn.configure()
    model = models.ReducedWongWangExcInh(G=np.array([G]))  # Deco 2014 defaults otherwise
    mons = [monitors.Bold(period=TR_MS)] if bold else [monitors.TemporalAverage(period=1.0)]
    integ = integrators.EulerStochastic(
        dt=dt_ms, noise=noise.Additive(nsig=np.array([1e-6]), random_stream=np.random.RandomState(seed))
    )
    sim = simulator.Simulator(
        model=model, connectivity=conn, coupling=coupling.Linear(a=np.array([1.0])),
        integrator=integ, monitors=mons, simulation_length=sim_ms,
    )  # fmt: skip
    sim.configure()
    return sim.run()


def run_tvb(sc, duration_s, dt_ms=0.1, batch=1, bold=True, seed=0):
    """tvb-library Simulator, one simulation of min(duration_s, TVB_MAX_SIM_S) seconds."""
    if batch != 1:
        raise ValueError(f"batch: TVB runs one simulation at a time; got {batch}, need 1")
    sc = _check_sc(sc)
    n = sc.shape[0]
    sim_s = min(float(duration_s), TVB_MAX_SIM_S)
    t0 = time.perf_counter()
    _tvb_sim(sc, 2 * TR_MS, dt_ms, G0, bold, seed)  # numba JIT + configure
    compile_s = time.perf_counter() - t0
    steps = int(round(sim_s * 1000.0 / dt_ms))
    t0 = time.perf_counter()
    _tvb_sim(sc, sim_s * 1000.0, dt_ms, G0, bold, seed + 1)
    wall = time.perf_counter() - t0
    return _record(
        f"tvb-library {_version('tvb-library')}", 1, n, dt_ms, sim_s, bold, wall, compile_s, steps,
        "tvb.simulator.models.ReducedWongWangExcInh (Deco 2014; w_EI fixed 1)",
        f"single simulation of {sim_s:g} s (requested {duration_s:g} s; TVB is slow, region_steps_per_s "
        f"is from the steps simulated); EulerStochastic, Linear coupling, no delays, float64; BOLD = "
        f"TVB Bold monitor (HRF convolution, period {TR_MS:g} ms); wall includes configure()",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------

_PEERS = {
    "neurolib": ("neurolib.models.ww", run_neurolib),
    "tvboptim": ("tvboptim.experimental.network_dynamics", run_tvboptim),
    "vbjax": ("vbjax", run_vbjax),
    "tvb": ("tvb.simulator.simulator", run_tvb),
}


def available_peers() -> list[str]:
    """Names of the peers whose packages import in this environment."""
    names = []
    for name, (module, _fn) in _PEERS.items():
        try:
            import_module(module)
        except Exception:  # noqa: BLE001 - a broken or missing peer is simply absent
            continue
        names.append(name)
    return names


def run_peer(name: str, sc, duration_s, dt_ms=0.1, batch=1, bold=True, seed=0) -> dict:
    """Dispatch to ``run_<name>``."""
    if name not in _PEERS:
        raise ValueError(f"name: unknown peer {name!r}; known: {sorted(_PEERS)}")
    return _PEERS[name][1](sc, duration_s, dt_ms, batch, bold, seed)


def random_sc(n: int = 80, seed: int = 0) -> np.ndarray:
    """A random symmetric, non-negative (n, n) SC with zero diagonal, scaled to max 0.2."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) ** 4
    a = a + a.T
    np.fill_diagonal(a, 0.0)
    return 0.2 * a / a.max()


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Run W1 peers and print JSON lines.")
    ap.add_argument("--peers", nargs="*", default=None)
    ap.add_argument("--batch", type=int, nargs="*", default=[1])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--dt", type=float, default=0.1)
    ap.add_argument("--n", type=int, default=80)
    ap.add_argument("--no-bold", action="store_true")
    args = ap.parse_args()
    sc = random_sc(args.n)
    for name in args.peers or available_peers():
        for b in args.batch:
            if name == "tvb" and b != 1:
                continue
            print(json.dumps(run_peer(name, sc, args.duration, args.dt, b, not args.no_bold)), flush=True)
