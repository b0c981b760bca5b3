"""Workload W1 on the GPU: rWW E–I with FIC, dt 0.1 ms, 60 s simulated, BOLD on, through the fused
CUDA kernel (raybrain/cuda) -- for the device machine.

For each batch size prints one JSON line
``{"tool", "device", "B", "N", "dt_ms", "sim_s", "bold", "K", "wall_s", "region_steps_per_s",
"flops_per_region_step", "peak_fraction", ...}``; region-steps/s = B · N · steps / wall (kernel
compilation excluded: a short warm-up run compiles first; the timed run is synchronised).
``peak_fraction`` = region-steps/s x FLOPs per region-step / peak, with the FLOPs counted from the
kernel source (:func:`flops_per_region_step`) and the peak of an H100 SXM (fp32 67 TFLOPS, fp64
34 TFLOPS non-tensor; pass ``--peak-tflops`` for another GPU). Without CuPy or a device it prints
one ``{"skipped": reason}`` line and exits 0.

    python benchmarks/gpu_w1.py                              # B = 1 ... 32768, N = 80, 60 s
    python benchmarks/gpu_w1.py --batch 1024 --sim-s 5 --n 100
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

PEAK_TFLOPS = {"float32": 67.0, "float64": 34.0}  # H100 SXM, non-tensor


def flops_per_region_step(n: int, k_h: int, k_tr: int) -> float:
    """Floating-point operations of one region-step of ``rww_core.cuh`` (exp, log, sqrt, one
    division: 1 each; sincospi: 2; both branches of phi, as the kernel evaluates both):
    coupling 2N; Box–Muller 12; currents 13; two transfer functions 2 x 19; drift 9; update 8;
    sums 4; per hemodynamic step (every k_h steps) flush 3 + Balloon–Windkessel 24, and per sample
    (every k_tr of those) BOLD 10."""
    return 2.0 * n + 12 + 13 + 2 * 19 + 9 + 8 + 4 + (3 + 24) / k_h + 10.0 / (k_h * k_tr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 128, 1024, 4096, 16384, 32768])
    ap.add_argument("--n", type=int, default=80, choices=(68, 80, 100),
                    help="regions (80: the HCP SC; 68: its first 68; 100: it tiled, for timing only)")
    ap.add_argument("--sim-s", type=float, default=60.0)
    ap.add_argument("--dt-ms", type=float, default=0.1)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--lanes", type=int, default=None, help="simulations per thread block (default: chosen)")
    ap.add_argument("--fast-math", action="store_true", help="__expf/__fdividef in float32")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args(argv)
    try:
        import cupy as cp
        dev = cp.cuda.Device()
        name = cp.cuda.runtime.getDeviceProperties(dev.id)["name"].decode()
    except Exception as e:
        print(json.dumps({"skipped": f"needs CuPy and a CUDA device: {type(e).__name__}: {e}"}))
        return 0

    from raybrain.cuda import plan
    from raybrain.cuda.launch import run_rww_cuda
    from raybrain.cuda.simulation import run_chunk
    from raybrain.data import list_subjects, load_subject
    from raybrain.integrate import Simulation, SimulationSettings
    from raybrain.objective import scale_sc

    sc80 = scale_sc(load_subject(list_subjects("hcp")[0]).sc, 0.2)
    if args.n <= 80:
        sc = sc80[:args.n, :args.n]
    else:  # a 100-region connectome for timing only: the HCP SC tiled
        idx = np.arange(args.n) % 80
        sc = sc80[np.ix_(idx, idx)]
    peak = (args.peak_tflops or PEAK_TFLOPS[args.dtype]) * 1e12
    st = SimulationSettings(duration=args.sim_s, dt=args.dt_ms * 1e-3, dtype=args.dtype, backend="cupy")
    kw = dict(lanes=args.lanes, fast_math=args.fast_math)
    for B in args.batch:
        params = {"G": np.linspace(0.5, 2.0, B)}
        warm = Simulation("rww", sc, params, st.replace(duration=0.72))
        run_chunk(warm, 100, run_rww_cuda, xp=cp, **kw)  # compiles this kernel variant
        sim = Simulation("rww", sc, params, st)
        n_steps = st.n_steps(st.duration)
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        bold, _ = run_chunk(sim, n_steps, run_rww_cuda, xp=cp, **kw)
        cp.cuda.Device().synchronize()
        wall = time.perf_counter() - t0
        k_h, k_tr = st.steps_per_bold_step, st.bold_steps_per_tr
        rate = B * args.n * n_steps / wall
        flops = flops_per_region_step(args.n, k_h, k_tr)
        umask = plan.uniform_mask(cp.stack([sim.params[k] for k in plan.RWW_PARAM_ORDER], axis=1))
        k = args.lanes or plan.choose_sims_per_block(args.dtype, umask)
        finite = bool(cp.isfinite(bold).all())
        from raybrain.cuda.launch import get_kernel
        kern, _ = get_kernel(args.dtype, args.n, k, umask, args.fast_math)
        print(json.dumps({
            "tool": f"raybrain cuda ({args.dtype}{', fast math' if args.fast_math else ''})", "device": name,
            "B": B, "N": args.n, "dt_ms": args.dt_ms, "sim_s": args.sim_s, "bold": True, "K": k,
            "blocks": -(-B // k), "threads_per_block": plan.threads_per_block(args.n),
            "shared_bytes": plan.smem_bytes(args.dtype, args.n, k), "registers": kern.num_regs,
            "local_bytes": kern.local_size_bytes, "wall_s": round(wall, 4),
            "region_steps_per_s": rate, "flops_per_region_step": round(flops, 2),
            "peak_fraction": rate * flops / peak, "bold_shape": list(bold.shape), "finite": finite}), flush=True)
        del sim, bold, warm
        cp.get_default_memory_pool().free_all_blocks()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
