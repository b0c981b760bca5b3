"""Parameter recovery by gradient descent through the simulator (raybrain.jax_backend), on CPU.

Three parts, each a few minutes on one CPU core (durations reduced from real sessions; stated in
the output):

(a) ``global``  — rWW (FIC on), synthetic subject from hcp/101309's connectome (N = 80, SC max
    0.2) simulated at G = 1.6, sigma = 0.005 by the NumPy simulator; fit (G, sigma) with the
    ``gradient`` optimizer exactly as an experiment runs it (ask → real pfic loss told →
    Adam step on the differentiable stand-in, :class:`raybrain.losses.differentiable.ObjectiveLoss`, fresh
    fixed noise per step). Prints start, final, best told, truth and relative errors.
(b) ``regional`` — Hopf (Deco 2017), one bifurcation parameter ``a_i`` per region (N = 80
    values, G and sigma fixed), synthetic subject (FC of 4 runs at known ``a_i``); projected Adam
    on the FC loss (1 − r + 10 · squared error, of the FC averaged over 4 repeats as the target is
    over 4 sessions) with fresh fixed noise each step.
    Prints the RMS error relative to the search range and the correlation of fitted vs true
    ``a_i`` at the start and the end, and the loss (3 fresh noise draws) at start, end and truth.
(c) ``sc`` — the full connectome (N² weights) as the fitted parameter of rWW with BOLD, random
    symmetric SC: time and peak memory (max RSS of a fresh process) per value-and-gradient at
    N = 68, 84 and 164, and the loss over a few Adam steps from a perturbed SC.

    python benchmarks/gradient_recovery.py --part global
    python benchmarks/gradient_recovery.py --part regional
    python benchmarks/gradient_recovery.py --part sc          # one subprocess per N
    python benchmarks/gradient_recovery.py                    # all three
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _x64():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


# ---------------------------------------------------------------------------------------------- (a)
def part_global(steps: int = 24, duration: float = 86.4, grad_duration: float = 57.6, dt: float = 0.002,
                seed: int = 0):
    _x64()
    from raybrain.experiment import ExperimentConfig
    from raybrain.search import get_optimizer

    truth = {"G": 1.6, "sigma": 0.005}
    cfg = ExperimentConfig.model_validate({
        "name": "bench-global", "storage": "/tmp/raybrain-bench",
        "subjects": {"synthetic": [{"name": "synth", "from_subject": "hcp/101309", "params": truth, "seed": 11,
                                    "duration": 288.0}]},
        "model": {"name": "rww"},
        "parametrisation": {"kind": "global", "names": ["G", "sigma"],
                            "bounds": {"G": [0.5, 2.5], "sigma": [0.001, 0.01]}},
        "loss": "pfic",
        "simulation": {"fidelities": [{"duration": duration, "dt": dt}], "burn_in": 20.0, "noise": "common",
                       "dtype": "float64", "window": 30, "step": 2, "repeats": 2},
        "optimizers": [{"name": "gradient", "population": 1}], "budget": {"evaluations": steps}})
    obj = cfg.build_objective("synth")
    x0 = np.array([0.9, 0.0085])
    opt = get_optimizer("gradient", obj.parametrisation.bounds, seed=seed, x0=x0, lr=0.08, lr_decay=0.97,
                        patience=steps, grad_repeats=2, grad_duration=grad_duration)
    opt.attach_objective(obj, seed=seed, repeats=2)
    t0 = time.perf_counter()
    hist = []
    for g in range(steps):
        th = opt.ask()
        rec = obj.evaluate(th, seed=1000 + g, repeats=2)
        opt.tell(th, [r["loss"] for r in rec])
        hist.append((th[0].copy(), rec[0]["loss"]))
    wall = time.perf_counter() - t0
    span = obj.parametrisation.bounds[:, 1] - obj.parametrisation.bounds[:, 0]
    tv = np.array([truth["G"], truth["sigma"]])
    final = hist[-1][0]
    last = np.mean([h[0] for h in hist[-5:]], axis=0)
    out = {"part": "global", "model": "rww (FIC)", "N": 80, "subject": "synthetic from hcp/101309 (288 s BOLD)",
           "objective": f"pfic, {duration} s at dt {dt} s, 2 repeats, FCD window 30 step 2",
           "gradient": f"ObjectiveLoss over {grad_duration} s, 2 repeats, fresh noise per step, soft KS h=0.05",
           "adam": "lr 0.08 of the range, decay 0.97/step", "steps": steps, "wall_s": round(wall, 1),
           "truth": truth, "start": dict(G=x0[0], sigma=x0[1]),
           "final": dict(G=round(final[0], 4), sigma=round(final[1], 6)),
           "mean_last5": dict(G=round(last[0], 4), sigma=round(last[1], 6)),
           "best_told": dict(G=round(opt.best_theta[0], 4), sigma=round(opt.best_theta[1], 6)),
           "rel_err_start": dict(zip(("G", "sigma"), np.round(np.abs(x0 - tv) / tv, 3).tolist())),
           "rel_err_final": dict(zip(("G", "sigma"), np.round(np.abs(final - tv) / tv, 3).tolist())),
           "rel_err_mean_last5": dict(zip(("G", "sigma"), np.round(np.abs(last - tv) / tv, 3).tolist())),
           "range_err_start": float(np.round(np.sqrt(np.mean(((x0 - tv) / span) ** 2)), 3)),
           "range_err_final": float(np.round(np.sqrt(np.mean(((final - tv) / span) ** 2)), 3)),
           "told_loss_first_last": [round(hist[0][1], 4), round(hist[-1][1], 4)],
           "trajectory_G": [round(h[0][0], 3) for h in hist],
           "trajectory_sigma": [round(h[0][1] * 1e3, 2) for h in hist]}
    print(json.dumps(out))
    return out


# ---------------------------------------------------------------------------------------------- (b)
def part_regional(steps: int = 60, duration: float = 2304.0, n: int = 80, seed: int = 0, lr: float = 0.03,
                  decay: float = 0.98):
    jax = _x64()
    import jax.numpy as jnp

    from raybrain import data
    from raybrain.jax_backend import JaxSimulator
    from raybrain.losses.differentiable import fc_matrix
    from raybrain.integrate import Simulation, SimulationSettings
    from raybrain.objective import scale_sc

    iu, ju = np.triu_indices(n, 1)

    def fc_loss_of_fc(f, emp):
        u, v = f[0, iu, ju], emp[iu, ju]
        uc, vc = u - jnp.mean(u), v - np.mean(v)
        r = jnp.sum(uc * vc) / jnp.sqrt(jnp.sum(uc * uc) * np.sum(vc * vc))
        return (1.0 - r) + 10.0 * jnp.mean((u - v) ** 2)

    sc = scale_sc(data.load_subject("hcp/101309").sc, 0.2)[:n, :n]
    rng = np.random.default_rng(seed)
    lo, hi = -0.3, 0.1
    a_true = np.clip(-0.1 + 0.06 * rng.standard_normal(n), lo + 0.02, hi - 0.02)
    fixed = {"G": 1.0, "sigma": 0.02}
    s = SimulationSettings(duration=duration, dt=0.04, tr=0.72, burn_in=36.0, dtype="float64", seed=7,
                           hemodynamics="none", bold_dt=0.04)
    sessions = 4
    bold = Simulation("hopf", sc, {k: np.full(sessions, v) for k, v in fixed.items()} | {"a": np.tile(a_true, (sessions, 1))},
                      s, batch=sessions).run().bold
    emp = np.mean([np.corrcoef(b.T) for b in bold], axis=0)
    fit = JaxSimulator("hopf", sc, s.replace(seed=1), params=fixed, repeats=sessions, grad_burn_in=False)

    def loss(a, k):
        # FC averaged over the repeats first, as the target is over sessions: the expected loss is then
        # minimal near the truth (a per-repeat loss is biased by the FC estimation noise)
        f = jnp.mean(fc_matrix(fit.bold({"a": a}, k)), axis=0)[None]
        return fc_loss_of_fc(f, emp)

    vg = jax.jit(jax.value_and_grad(loss))
    # projected Adam in the unit box, fresh fixed noise (2 realisations) each step
    a0 = np.full(n, -0.05)
    u, m1, m2 = (a0 - lo) / (hi - lo), np.zeros(n), np.zeros(n)
    hist = []
    t0 = time.perf_counter()
    for t in range(1, steps + 1):
        a = lo + (hi - lo) * u
        val, g = vg(jnp.asarray(a), t)
        g = np.asarray(g) * (hi - lo)
        hist.append(float(val))
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        u = np.clip(u - lr * decay ** (t - 1) * (m1 / (1 - 0.9 ** t)) / (np.sqrt(m2 / (1 - 0.999 ** t)) + 1e-8), 0, 1)
    wall = time.perf_counter() - t0
    a1 = lo + (hi - lo) * u

    def stats(a):
        return {"rms_err_rel_range": round(float(np.sqrt(np.mean((a - a_true) ** 2)) / (hi - lo)), 4),
                "corr_with_truth": round(float(np.corrcoef(a, a_true)[0, 1]), 3) if np.std(a) > 0 else None,
                "mean": round(float(np.mean(a)), 4), "sd": round(float(np.std(a)), 4)}

    at_truth = float(np.mean([loss(jnp.asarray(a_true), 10_000 + k) for k in range(3)]))
    at_end = float(np.mean([loss(jnp.asarray(a1), 10_000 + k) for k in range(3)]))
    at_start = float(np.mean([loss(jnp.asarray(a0), 10_000 + k) for k in range(3)]))
    out = {"part": "regional", "model": "hopf (no hemodynamics)", "N": n, "parameter": "a_i per region (N values)",
           "range": [lo, hi], "fixed": fixed, "truth": {"mean": round(float(a_true.mean()), 4), "sd": round(float(a_true.std()), 4),
                                                  "law": "a_i = -0.1 + 0.06 z_i (clipped), seed 0"},
           "target": f"FC averaged over {sessions} runs of {duration} s at dt 0.04 s (TR 0.72 s)",
           "fit": f"{duration} s runs, {sessions} repeats, fresh fixed noise each step, "
                  "loss (1-r) + 10 mse of the repeat-averaged FC",
           "adam": f"{steps} steps, lr {lr} of the range, decay {decay}, start a_i = -0.05", "wall_s": round(wall, 1),
           "start": stats(a0), "end": stats(a1),
           "loss_step_first_last": [round(hist[0], 4), round(hist[-1], 4)],
           "loss_fresh_noise_start_end_truth": [round(at_start, 4), round(at_end, 4), round(at_truth, 4)]}
    print(json.dumps(out))
    return out


# ---------------------------------------------------------------------------------------------- (c)
def _sc_one(n: int, steps: int, duration: float):
    """One N, in this process: random SC, target FC at SC_true, Adam on the full SC from a perturbed one."""
    jax = _x64()
    from raybrain.jax_backend import JaxSimulator
    from raybrain.losses.differentiable import fc_loss, fc_matrix
    from raybrain.integrate import SimulationSettings

    rng = np.random.default_rng(n)
    a = rng.random((n, n)) ** 3
    sc_true = (a + a.T) / 2
    np.fill_diagonal(sc_true, 0)
    sc_true *= 0.2 / sc_true.max()
    s = SimulationSettings(duration=duration, dt=1e-3, tr=0.72, burn_in=7.2, dtype="float64", seed=3)
    target = JaxSimulator("rww", sc_true, s, repeats=2, first_stream=50)
    emp = np.asarray(fc_matrix(target.bold({"G": 1.6})).mean(0))
    js = JaxSimulator("rww", sc_true, s, repeats=1, grad_burn_in=False)

    def loss(C):
        return fc_loss(js.bold({"G": 1.6, "sc": C}), emp, mse_weight=1.0)

    vg = jax.jit(jax.value_and_grad(loss))
    C = np.clip(sc_true * np.exp(0.5 * rng.standard_normal((n, n))), 0, 0.4)
    C = (C + C.T) / 2
    np.fill_diagonal(C, 0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB), before the gradient
    t0 = time.perf_counter()
    val, g = vg(C)
    g.block_until_ready()
    compile_s = time.perf_counter() - t0
    times, losses = [], []
    # projected Adam on the N² weights in [0, 0.4] (lr 0.02 of the range), symmetric gradient
    lr, span = 0.02 * 0.4, 0.4
    m1 = np.zeros_like(C)
    m2 = np.zeros_like(C)
    err0 = float(np.linalg.norm(C - sc_true) / np.linalg.norm(sc_true))
    for t in range(1, steps + 1):
        t0 = time.perf_counter()
        val, g = vg(C)
        g = np.asarray(g)
        times.append(time.perf_counter() - t0)
        losses.append(float(val))
        g = (g + g.T) / 2
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        C = np.clip(C - lr * (m1 / (1 - 0.9 ** t)) / (np.sqrt(m2 / (1 - 0.999 ** t)) + 1e-12 / span), 0, span)
        np.fill_diagonal(C, 0)
    losses.append(float(vg(C)[0]))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    return {"part": "sc", "N": n, "weights": n * n, "model": "rww (FIC) + Balloon-Windkessel",
            "run": f"{duration} s + 7.2 s burn-in at dt 1 ms, 1 repeat, checkpoint per TR",
            "first_call_s (compile + 1 grad)": round(compile_s, 1),
            "grad_s_median": round(float(np.median(times)), 2), "peak_rss_MiB": round(rss),
            "rss_before_gradient_MiB": round(rss0),
            "loss_per_step (fixed noise)": [round(v, 4) for v in losses],
            "sc_rel_err_start_end": [round(err0, 4),
                                     round(float(np.linalg.norm(C - sc_true) / np.linalg.norm(sc_true)), 4)]}


def part_sc(ns=(68, 84, 164), steps: int = 5, duration: float = 28.8):
    outs = []
    for n in ns:
        cmd = [sys.executable, __file__, "--sc-one", str(n), "--steps", str(steps), "--duration", str(duration)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            print(json.dumps({"part": "sc", "N": n, "error": r.stderr.strip().splitlines()[-1:]}))
            continue
        line = r.stdout.strip().splitlines()[-1]
        print(line)
        outs.append(json.loads(line))
    return outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["global", "regional", "sc", "all"], default="all")
    ap.add_argument("--sc-one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--n", type=int, nargs="*", default=None, help="N for --part sc (default 68 84 164)")
    ap.add_argument("--decay", type=float, default=None, help="Adam step decay per step for --part regional")
    a = ap.parse_args(argv)
    if a.sc_one is not None:
        print(json.dumps(_sc_one(a.sc_one, a.steps or 5, a.duration or 28.8)))
        return
    kw = {k: v for k, v in (("steps", a.steps), ("duration", a.duration)) if v is not None}
    if a.part in ("global", "all"):
        part_global(**kw)
    if a.part in ("regional", "all"):
        part_regional(**kw, **({"decay": a.decay} if a.decay is not None else {}))
    if a.part in ("sc", "all"):
        part_sc(tuple(a.n) if a.n else (68, 84, 164), **kw)


if __name__ == "__main__":
    main()
