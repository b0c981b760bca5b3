"""float32 against float64: is the default precision biased anywhere in the pFIC search ranges?

For each point of a grid over sigma, G and the maps parameters (w_EE, w_EI), the same candidate
is simulated in float32 and in float64 with the same noise streams (one stream per seed), and
scored with the ``pfic`` loss against the bundled subject hcp/101309 (rWW with FIC, SC scaled to a
maximum of 0.2, 60 s burn-in, :class:`raybrain.objective.Objective` with the pFIC
:class:`~raybrain.parametrisation.Maps`). Per point and seed the paired difference
float32 − float64 of the loss and of r(FC) is taken; the point's line reports its mean and its
standard error (sample SD / sqrt(seeds)), and the seed-to-seed SD of the float64 values.

A point is *biased* when |mean paired difference| > 2 SE **and** > 0.25 × the seed-to-seed SD of
the float64 value (a shift a quarter of one noise draw's spread; smaller ones cannot move a fit).

    python benchmarks/precision.py                  # dt 1 ms grid (26 points x 8 seeds, 120 s)
    python benchmarks/precision.py --part corner    # low-sigma corner at dt 0.1 ms (4 points x 6 seeds)
    python benchmarks/precision.py --seeds 4 --duration 60   # quicker, noisier

One JSON line per point: ``{"part", "dt", "duration", "seeds", "sigma", "G", "w_EE", "w_EI",
"maps", "loss64", "loss32", "d_loss", "d_loss_se", "loss64_sd", "r64", "r32", "d_r", "d_r_se",
"r64_sd", "diverged", "biased_loss", "biased_r"}``, then a summary line ``{"summary": ...}`` with
the largest |d|/SE and |d|/SD over the points and the wall time of each dtype.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def grid(part: str):
    """(sigma, G, w_EE, w_EI, w_EE.c1, w_EI.c2) per point."""
    if part == "corner":
        return [(s, g, 1.4, 1.0, 0.0, 0.0) for s in (0.0005, 0.001) for g in (2.0, 2.45)]
    pts = [(s, g, 1.4, 1.0, 0.0, 0.0) for s in (0.0005, 0.001, 0.002, 0.005, 0.01) for g in (0.5, 1.5, 2.0, 2.45)]
    for s in (0.001, 0.005):
        pts += [(s, 2.0, 1.2, 1.5, 0.0, 0.0), (s, 2.0, 2.0, 1.0, 0.0, 0.0), (s, 2.0, 1.4, 2.5, 0.3, 0.2)]
    return pts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("grid", "corner"), default="grid")
    ap.add_argument("--seeds", type=int, default=None, help="noise streams per point (default 8 grid, 6 corner)")
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--dt", type=float, default=None, help="seconds (default 1e-3 grid, 1e-4 corner)")
    ap.add_argument("--burn-in", type=float, default=60.0)
    args = ap.parse_args(argv)

    from raybrain.data import load_subject
    from raybrain.integrate import SimulationSettings
    from raybrain.models import get_model
    from raybrain.objective import Objective
    from raybrain.parametrisation import Maps

    seeds = args.seeds or (8 if args.part == "grid" else 6)
    dt = args.dt or (1e-3 if args.part == "grid" else 1e-4)
    subject = load_subject("hcp/101309")
    model = get_model("rww", fic=True)
    maps = Maps.from_subject(model, subject)
    pts = grid(args.part)
    theta = []
    for (s, g, wee, wei, c1, c2) in pts:
        row = dict.fromkeys(maps.names, 0.0)
        row.update({"w_EE.c0": wee, "w_EE.c1": c1, "w_EI.c0": wei, "w_EI.c2": c2, "sigma.c0": s, "G": g})
        theta += [[row[k] for k in maps.names]] * seeds
    theta = np.asarray(theta)
    rows = np.arange(len(theta))  # row p * seeds + k: point p, noise stream = row number
    out, walls = {}, {}
    for dtype in ("float64", "float32"):
        st = SimulationSettings(duration=args.duration, dt=dt, burn_in=args.burn_in, dtype=dtype, seed=11)
        obj = Objective(subject, model, maps, "pfic", st, sc_max=0.2)
        sim = obj.simulation(theta, candidates=rows)
        sim.prepare()
        t0 = time.perf_counter()
        res = sim.run()
        walls[dtype] = time.perf_counter() - t0
        recs = obj.score(theta, res.bold, res)
        out[dtype] = {k: np.array([r[k] if r[k] is not None else np.nan for r in recs], dtype=float).reshape(len(pts), seeds)
                      for k in ("loss", "fc_corr")}
        out[dtype]["diverged"] = np.array([r["diverged"] for r in recs]).reshape(len(pts), seeds)
        print(f"{dtype}: {len(theta)} runs of {args.burn_in + args.duration:g} s at dt {dt:g} s in {walls[dtype]:.0f} s",
              file=sys.stderr, flush=True)
    worst = {"d_loss/se": 0.0, "d_r/se": 0.0, "d_loss/sd": 0.0, "d_r/sd": 0.0}
    n_biased = 0
    for p, (s, g, wee, wei, c1, c2) in enumerate(pts):
        line = {"part": args.part, "dt": dt, "duration": args.duration, "seeds": seeds, "sigma": s, "G": g,
                "w_EE": wee, "w_EI": wei, "maps": bool(c1 or c2)}
        line["diverged"] = int(out["float64"]["diverged"][p].sum() + out["float32"]["diverged"][p].sum())
        for key, name in (("loss", "loss"), ("fc_corr", "r")):
            a64, a32 = out["float64"][key][p], out["float32"][key][p]
            d = a32 - a64
            m, se, sd = float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(seeds)), float(np.std(a64, ddof=1))
            line.update({f"{name}64": float(np.mean(a64)), f"{name}32": float(np.mean(a32)), f"d_{name}": m,
                         f"d_{name}_se": se, f"{name}64_sd": sd})
            biased = bool(abs(m) > 2 * se and abs(m) > 0.25 * sd)
            line[f"biased_{name}"] = biased
            n_biased += biased
            worst[f"d_{name}/se"] = max(worst[f"d_{name}/se"], abs(m) / se if se > 0 else 0.0)
            worst[f"d_{name}/sd"] = max(worst[f"d_{name}/sd"], abs(m) / sd if sd > 0 else 0.0)
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in line.items()}), flush=True)
    print(json.dumps({"summary": {"part": args.part, "points": len(pts), "seeds": seeds, "biased": n_biased,
                                  **{k: round(v, 3) for k, v in worst.items()},
                                  "wall_s": {k: round(v, 1) for k, v in walls.items()}}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
