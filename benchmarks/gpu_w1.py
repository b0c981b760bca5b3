"""Workload W1 on the GPU: rWW E–I with FIC, dt 0.1 ms, 60 s simulated, BOLD on, through the fused
CUDA kernel (raybrain/cuda) -- for the device machine; ``--model hopf`` / ``lanmm`` time the
kernels generated for the other models at their default hemodynamics.

For each batch size prints one JSON line
``{"tool", "device", "model", "B", "N", "dt_ms", "sim_s", "bold", "K", "wall_s", "region_steps_per_s",
"flops_per_region_step", "peak_fraction", ...}``; region-steps/s = B · N · steps / wall (kernel
compilation excluded: a short warm-up run compiles first; the timed run is synchronised).
``peak_fraction`` = region-steps/s x FLOPs per region-step / peak, with the FLOPs counted from the
generated kernel (:func:`flops_per_region_step`) and the peak of an H100 SXM (fp32 67 TFLOPS, fp64
34 TFLOPS non-tensor; pass ``--peak-tflops`` for another GPU). ``registers`` and ``local_bytes``
are the compiled variant's (local memory > 0: spills). Without CuPy or a device it prints one
``{"skipped": reason}`` line and exits 0.

    python benchmarks/gpu_w1.py                              # B = 1 ... 32768, N = 80, 60 s
    python benchmarks/gpu_w1.py --batch 1024 --sim-s 5 --n 100
    python benchmarks/gpu_w1.py --model lanmm --dt-ms 0.1 --sim-s 2 --batch 256
"""
from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np

PEAK_TFLOPS = {"float32": 67.0, "float64": 34.0}  # H100 SXM, non-tensor

#: FLOPs counted per call in the generated drift: phi evaluates both branches (series 13, exact 3)
FUNCTION_FLOPS = {"rb_phi": 16, "rb_exp": 1, "rb_log": 1, "rb_div": 1}


def drift_flops(model) -> int:
    """Operations of one evaluation of the model's generated drift (raybrain.cuda.codegen): each
    binary operator and unary minus 1, each function by :data:`FUNCTION_FLOPS` (exp, log, sqrt and
    a division count 1). Observables the kernel does not sum are counted too (the compiler drops
    them, so this is an upper bound)."""
    from raybrain.cuda.codegen import model_header

    body = model_header(model).split("void drift(", 1)[1].split("\n}\n", 1)[0]
    ops = len(re.findall(r" [-+*] ", body)) + body.count("(-")
    return ops + sum(body.count(f + "(") * c for f, c in FUNCTION_FLOPS.items())


def flops_per_region_step(model, n: int, k_h: int, k_tr: int, bold: bool) -> float:
    """Floating-point operations of one region-step of ``model_core.cuh`` with the model's header:
    coupling 2 C N; Box–Muller 12 per pair; the drift (:func:`drift_flops`); the update 2 per state
    variable and 2 per noise variable; the block sums 1 per sum; the hemodynamic input 1; per
    hemodynamic step (every k_h steps) the flush (1 per sum) and the Balloon–Windkessel step 24, and
    per sample (every k_tr of those) BOLD 10."""
    S, O = len(model.state_variables), len(model.summary_observables)
    pairs = (len(model.noise_variables) + 1) // 2
    per_step = (2.0 * len(model.coupled_variables) * n + 12 * pairs + drift_flops(model) + 2 * S
                + 2 * len(model.noise_variables) + (S + O) + (1 if bold else 0))
    return per_step + ((S + O) + (24 if bold else 0)) / k_h + (10.0 if bold else 0.0) / (k_h * k_tr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="rww", help="a registered model (raybrain.models.MODELS)")
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
    from raybrain.cuda.launch import prepare_kernel, run_cuda
    from raybrain.cuda.simulation import run_chunk
    from raybrain.data import list_subjects, load_subject
    from raybrain.integrate import Simulation, SimulationSettings
    from raybrain.models import get_model
    from raybrain.objective import scale_sc

    model = get_model(args.model)
    sc80 = scale_sc(load_subject(list_subjects("hcp")[0]).sc, 0.2)
    if args.n <= 80:
        sc = sc80[:args.n, :args.n]
    else:  # a 100-region connectome for timing only: the HCP SC tiled
        idx = np.arange(args.n) % 80
        sc = sc80[np.ix_(idx, idx)]
    peak = (args.peak_tflops or PEAK_TFLOPS[args.dtype]) * 1e12
    st = SimulationSettings(duration=args.sim_s, dt=args.dt_ms * 1e-3, dtype=args.dtype, backend="cupy",
                            burn_in=0.0)
    kw = dict(lanes=args.lanes, fast_math=args.fast_math)
    for B in args.batch:
        lo, hi = model.parameter("G").bounds
        params = {"G": np.linspace(lo + 0.1 * (hi - lo), lo + 0.6 * (hi - lo), B)}
        warm = Simulation(model, sc, params, st.replace(duration=0.72))
        run_chunk(warm, 100, run_cuda, xp=cp, **kw)  # compiles this kernel variant
        sim = Simulation(model, sc, params, st)
        n_steps = st.n_steps(st.duration)
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        bold, _ = run_chunk(sim, n_steps, run_cuda, xp=cp, **kw)
        cp.cuda.Device().synchronize()
        wall = time.perf_counter() - t0
        k_h, k_tr = st.steps_per_bold_step, st.bold_steps_per_tr
        rate = B * args.n * n_steps / wall
        bold_on = sim.settings.hemodynamics == "balloon"
        flops = flops_per_region_step(model, args.n, k_h, k_tr, bold_on)
        call, _ = sim._kernel_call(0, cp)
        lp = plan.plan_call(call, args.lanes)
        kern, smem = prepare_kernel(call, args.lanes, args.fast_math)
        finite = bool(cp.isfinite(bold).all())
        print(json.dumps({
            "tool": f"raybrain cuda ({args.dtype}{', fast math' if args.fast_math else ''})", "device": name,
            "model": model.name, "B": B, "N": args.n, "dt_ms": args.dt_ms, "sim_s": args.sim_s, "bold": bold_on,
            "K": lp.k, "umask": hex(lp.umask), "blocks": len(plan.make_tiles(call.subject_index, lp.k)[0]),
            "threads_per_block": plan.threads_per_block(args.n), "shared_bytes": smem, "registers": kern.num_regs,
            "local_bytes": kern.local_size_bytes, "wall_s": round(wall, 4),
            "region_steps_per_s": rate, "flops_per_region_step": round(flops, 2),
            "peak_fraction": rate * flops / peak, "bold_shape": list(bold.shape), "finite": finite}), flush=True)
        del sim, bold, warm, call
        cp.get_default_memory_pool().free_all_blocks()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
