"""Workload W1: rWW E–I with FIC, N = 80 (bundled HCP SC), dt 0.1 ms, 60 s simulated, BOLD on.

Runs raybrain's fused CPU path for each batch size (``--model`` hopf or lanmm: the same workload
for another model, its kernel generated from the same declaration-driven source; ``--array``
also runs the array path at each B, with a ratio line; ``--compile`` times the compilation of
each kernel variant in-process with the on-disk cache off), then every peer simulator that is installed
(see ``benchmarks/peers.py``; a missing peer is skipped), and prints one JSON line per run:
``{"tool", "B", "N", "dt_ms", "sim_s", "bold", "wall_s", "region_steps_per_s", "peak_rss_mb", ...}``
followed by ratio lines ``{"ratio": "raybrain/<peer>", ...}`` at the best B of each.
region-steps/s = B · N · steps / wall (compilation excluded: ``Simulation.prepare`` compiles or loads the kernel first).

    python benchmarks/w1_simulate.py                # B = 1, 16, 64, 256, 60 s
    python benchmarks/w1_simulate.py --batch 64 --sim-s 10 --no-peers
    python benchmarks/w1_simulate.py --model lanmm --batch 64 --sim-s 2 --array --compile --no-peers
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def hcp_sc() -> np.ndarray:
    from raybrain.data import list_subjects, load_subject

    return load_subject(list_subjects("hcp")[0]).sc


MODELS = {  # model: (G values over the batch, hemodynamics, TR)
    "rww": ((0.5, 2.0), "balloon", 0.72),
    "hopf": ((0.1, 1.0), "none", 0.72),
    "lanmm": ((0.0, 10.0), "none", 0.004),
}


def run_raybrain(sc, B: int, sim_s: float, dt_ms: float, bold: bool, dtype: str, model: str = "rww",
                 fused: str = "auto", compile_time: bool = False) -> dict:
    from raybrain import _kernel_cache
    from raybrain.integrate import Simulation, SimulationSettings
    from raybrain.objective import scale_sc

    sc = scale_sc(sc, 0.2)
    (g0, g1), hemo, tr = MODELS[model]
    st = SimulationSettings(duration=sim_s, burn_in=0.0, dt=dt_ms * 1e-3, dtype=dtype, tr=tr, fused=fused,
                            hemodynamics=(hemo if bold else "none") if model == "rww" else hemo)
    params = {"G": np.linspace(g0, g1, B)}
    sim = Simulation(model, sc, params, st)
    extra = {}
    if compile_time and sim.use_fused:  # this variant compiled in-process, the on-disk cache off
        from raybrain import fused as _fused

        saved, _kernel_cache.CACHE_DIR, _fused._KERNELS = _kernel_cache.CACHE_DIR, "", {}
        try:
            extra["compile_s"] = round(sim.prepare(), 2)
        finally:
            _kernel_cache.CACHE_DIR = saved
    sim.prepare()  # compile (or load) the kernel variant run() uses
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    steps = sim.state.step
    import raybrain
    return {"tool": f"raybrain {raybrain.__version__} ({'fused numba' if res.fused else 'array'}, {dtype})",
            "model": model, "path": "fused" if res.fused else "array", "dtype": dtype,
            "B": B, "N": sc.shape[0], "dt_ms": dt_ms, "sim_s": sim_s, "bold": st.hemodynamics == "balloon",
            "wall_s": round(wall, 4), "region_steps_per_s": B * sc.shape[0] * steps / wall,
            "peak_rss_mb": round(peak_rss_mb(), 1), "bold_shape": list(res.bold.shape), **extra}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--sim-s", type=float, default=60.0)
    ap.add_argument("--dt-ms", type=float, default=0.1)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--no-bold", action="store_true")
    ap.add_argument("--model", default="rww", choices=sorted(MODELS))
    ap.add_argument("--array", action="store_true", help="also the array path at each B (for --array-sim-s)")
    ap.add_argument("--array-sim-s", type=float, default=None, help="simulated seconds of the array path "
                    "(default: --sim-s / 10)")
    ap.add_argument("--compile", action="store_true", help="time each kernel variant's compilation (cache off)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--peer-batch", type=int, nargs="+", default=None, help="batch sizes for peers (default: --batch)")
    ap.add_argument("--peer-sim-s", type=float, default=None, help="simulated seconds for peers (default: --sim-s)")
    args = ap.parse_args(argv)
    sc = hcp_sc()
    bold = not args.no_bold
    best = {}
    for B in args.batch:
        line = run_raybrain(sc, B, args.sim_s, args.dt_ms, bold, args.dtype, args.model, compile_time=args.compile)
        print(json.dumps(line), flush=True)
        best["raybrain"] = max(best.get("raybrain", 0.0), line["region_steps_per_s"])
        if args.array:
            ref = run_raybrain(sc, B, args.array_sim_s or args.sim_s / 10, args.dt_ms, bold, args.dtype, args.model,
                               fused="never")
            print(json.dumps(ref), flush=True)
            print(json.dumps({"ratio": "fused/array", "model": args.model, "dtype": args.dtype, "B": B,
                              "value": line["region_steps_per_s"] / ref["region_steps_per_s"]}), flush=True)
    if not args.no_peers and args.model == "rww":
        try:
            with contextlib.redirect_stdout(sys.stderr):  # peers print banners; stdout stays JSON lines
                import peers
        except Exception as e:  # pragma: no cover
            print(json.dumps({"peers": "unavailable", "why": str(e)}))
            peers = None
        with contextlib.redirect_stdout(sys.stderr):
            names = peers.available_peers() if peers else []
        for name in names:
            fn = getattr(peers, f"run_{name}")
            for B in (args.peer_batch or args.batch):
                if name == "tvb" and B != 1:
                    continue
                try:
                    with contextlib.redirect_stdout(sys.stderr):
                        line = fn(sc, duration_s=args.peer_sim_s or args.sim_s, dt_ms=args.dt_ms, batch=B, bold=bold,
                                  seed=0)
                except Exception as e:
                    line = {"tool": name, "B": B, "error": f"{type(e).__name__}: {e}"}
                line.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
                print(json.dumps(line, default=float), flush=True)
                if "region_steps_per_s" in line:
                    best[name] = max(best.get(name, 0.0), line["region_steps_per_s"])
    for name, v in best.items():
        if name != "raybrain" and v > 0:
            print(json.dumps({"ratio": f"raybrain/{name}", "best_raybrain": best["raybrain"], f"best_{name}": v,
                              "value": best["raybrain"] / v}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
