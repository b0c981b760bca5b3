"""End-to-end cohort benchmark: files → fits → group effect, with a known answer.

1. A synthetic cohort (:func:`raybrain.data.synthetic.make_cohort`) of ``--subjects`` subjects is
   built from two different connectomes — a bundled HCP subject's (80 AAL2 regions) and a
   76-region exponential-distance-rule one (:func:`raybrain.data.synthetic.edr_connectome`) —
   whose global coupling falls linearly with age, ``G = a + b·age + ε`` (ε ~ N(0, sd)), and is
   written as the files pipelines produce: ``participants.tsv`` with age, MRtrix upper-triangular
   connectome CSVs, XCP-D time-series TSVs with JSON sidecars, a dseg table per atlas.
2. raybrain fits every subject from a cohort config (``subjects.cohort``; ``bounds: {G: auto}``;
   SC normalised by spectral radius, the default), through Ray, on all local cores.
3. The group analysis (:func:`raybrain.report.cohort.associate`) regresses the fitted G on age.

Figures printed (and written as JSON lines to ``--out``/benchmark.jsonl): wall time of each stage,
the recovered slope with its 95 % CI against the true ``b`` (goal: right sign, CI covers the
truth), per-subject recovery error (fitted − true G: RMSE, bias, r), and the simulated-seconds
budget used (every simulation, burn-in included).

    python benchmarks/cohort.py                          # 100 subjects (the issue's figure)
    python benchmarks/cohort.py --subjects 12 --quick    # a smoke run

Why G alone: with FIC the fixed point is stable and the noise amplitude σ only scales
fluctuations around it, so FC/FCD barely constrain σ — the profile phase of ``study-cpu`` found
σ's coefficients unidentified in 172–178 of 216 fits — while G moves FC strongly (see the
recovery check ``--recovery``, which profiles G and σ on a few subjects).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

TRUE_INTERCEPT, TRUE_SLOPE, SUBJECT_SD = 2.1, -0.008, 0.05  # G = a + b·age (+ N(0, sd)), age 8–80 years


def build(out: Path, n: int, duration: float, seed: int) -> tuple[pd.DataFrame, float]:
    """The cohort's files under ``out/data``; ``duration``: seconds of BOLD per subject."""
    from raybrain.data import load_subject
    from raybrain.data.synthetic import edr_connectome, make_cohort

    t0 = time.perf_counter()
    truth = make_cohort(out / "data", n, connectomes=[("AAL2", load_subject("hcp/101309")),
                                                     ("EDR76", edr_connectome(76, seed=7))],
                        covariate_effects={"G": (TRUE_INTERCEPT, TRUE_SLOPE)}, subject_sd={"G": SUBJECT_SD},
                        fixed={"sigma": 0.005}, tr=0.72, duration=duration, dt=1e-3, burn_in=20.0,
                        norm="spectral", norm_value=None, dtype="float32", seed=seed, overwrite=True)
    return truth, time.perf_counter() - t0


CONFIG = """\
name: {name}
storage: {storage}
subjects:
  cohort:
    participants: data/participants.tsv
    sc: "sub-{{sub}}/dwi/sub-{{sub}}_seg-{{atlas}}_connectome.csv"
    bold: "sub-{{sub}}/func/sub-{{sub}}_task-rest_run-*_seg-{{atlas}}_stat-mean_timeseries.tsv"
    atlas: "atlas-{{atlas}}_dseg.tsv"
    tr: sidecar
    covariates: [age, sex, atlas]
model: {{name: rww}}
parametrisation:
  kind: global
  names: [G]
  bounds: {{G: auto}}
loss: pfic
simulation:
  fidelities: [{{duration: {duration}, dt: 0.001}}]
  burn_in: 20.0
  dtype: float32
  window: 60
  step: 2
optimizers:
  - {{name: grid, population: {budget}}}
budget: {{evaluations: {budget}}}
seeds: 1
validation: {{top: 3, repeats: 2, profile: {{points: 1, span: 0.1}}}}
resources: {{cpu: 1, gpu: 0}}
"""


def recovery_check(scan: float, duration: float, emit) -> None:
    """Is G identifiable from FC/FCD, and σ? For one subject per connectome (true G 1.8, σ 0.005),
    the loss profiled along G (σ at its truth) and along σ (G at its truth) over each parameter's
    default search range, 3 fresh-noise repeats a point: the rise of the profile above its minimum
    in units of the repeats' standard error, and where the minimum falls."""
    from raybrain.data import Subject, load_subject
    from raybrain.data.synthetic import edr_connectome, simulate_bold
    from raybrain.integrate import SimulationSettings
    from raybrain.objective import Objective
    from raybrain.parametrisation import Global

    for atlas, conn in (("AAL2", load_subject("hcp/101309")), ("EDR76", edr_connectome(76, seed=7))):
        truth = {"G": 1.8, "sigma": 0.005}
        bold = simulate_bold(conn.sc, truth, tr=0.72, duration=scan, dt=1e-3, burn_in=20.0, seed=11,
                             norm="spectral", norm_value=None, dtype="float32")
        subject = Subject(name=atlas, sc=conn.sc, tr=0.72, bold=bold)
        settings = SimulationSettings(duration=duration, dt=1e-3, burn_in=20.0, tr=0.72, dtype="float32")
        par = Global("rww", names=tuple(truth))
        obj = Objective(subject, "rww", par, "pfic", settings, window=60, step=2, sc_norm="spectral")
        for name, grid in (("G", np.linspace(0.9, 2.5, 9)), ("sigma", np.linspace(0.001, 0.01, 9))):
            theta = np.array([[v if n == name else truth[n] for n in par.names] for v in grid])
            recs = obj.evaluate(theta, seed=5, repeats=3)
            loss = np.array([r["loss"] for r in recs])
            se = np.array([r.get("loss_se") or np.nan for r in recs])
            k = int(np.argmin(loss))
            emit(stage="recovery-check", atlas=atlas, parameter=name, truth=truth[name], argmin=float(grid[k]),
                 rise_over_se=float((loss.max() - loss[k]) / np.nanmean(se)),
                 loss=[round(float(x), 4) for x in loss], se=[round(float(x), 4) for x in se],
                 grid=[round(float(x), 4) for x in grid])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=100)
    ap.add_argument("--scan", type=float, default=864.0, help="seconds of BOLD per subject (HCP: 1200 TRs = 864 s)")
    ap.add_argument("--duration", type=float, default=288.0, help="seconds of BOLD per fitted simulation")
    ap.add_argument("--budget", type=int, default=14, help="grid points over the auto G range per subject")
    ap.add_argument("--out", default="/tmp/raybrain-cohort-bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="short simulations (smoke run)")
    ap.add_argument("--recovery", action="store_true", help="only the identifiability check of G and sigma")
    args = ap.parse_args(argv)
    if args.quick:
        args.scan, args.duration, args.budget = 288.0, 144.0, 6
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "benchmark.jsonl").open("a")

    def emit(**kw):
        kw = {"benchmark": "cohort", **({} if args.recovery else {"subjects": args.subjects}), **kw}
        log.write(json.dumps(kw) + "\n")
        log.flush()
        print(json.dumps(kw))

    if args.recovery:
        recovery_check(args.scan, args.duration, emit)
        return 0
    truth, t_build = build(out, args.subjects, args.scan, args.seed)
    emit(stage="build", wall_s=round(t_build, 1))

    name = f"cohort-{args.subjects}"
    cfg = out / "cohort.yaml"
    cfg.write_text(CONFIG.format(name=name, storage=str(out / "results"), duration=args.duration,
                                 budget=args.budget))
    results = out / "results" / name
    if results.exists():
        import shutil

        shutil.rmtree(results)
    t0 = time.perf_counter()
    rc = subprocess.call([sys.executable, "-m", "raybrain.cli", "run", str(cfg), "--quiet"])
    t_fit = time.perf_counter() - t0
    emit(stage="fit", wall_s=round(t_fit, 1), exit_code=rc, cores=os.cpu_count())
    if rc != 0:
        return rc

    from raybrain import results as R
    from raybrain.report.cohort import associate, fits_table

    res = R.load(results)
    table = fits_table(res)
    assoc = associate(table, quantities=["G"], covariates=["age"], n_perm=5000, seed=0)
    row = assoc.iloc[0]
    t = truth.set_index("participant_id")
    fitted = table.set_index("subject")["G"]
    err = fitted - t.loc[fitted.index, "G"]
    sim_s = float(((res.evaluations["duration"] + res.burn_in) * res.evaluations.get("new_sims",
                   res.evaluations.get("repeats", 1)).fillna(1)).sum())
    by_atlas = {a: float(np.sqrt(np.mean(err[t.loc[err.index, "atlas"] == a] ** 2)))
                for a in sorted(t["atlas"].unique())}
    emit(stage="group", slope=float(row["slope"]), ci_low=float(row["ci_low"]), ci_high=float(row["ci_high"]),
         p_perm=float(row["p_perm"]), true_slope=TRUE_SLOPE,
         covers_truth=bool(row["ci_low"] <= TRUE_SLOPE <= row["ci_high"]),
         right_sign=bool(np.sign(row["slope"]) == np.sign(TRUE_SLOPE) and row["ci_high"] < 0),
         rmse_G=float(np.sqrt(np.mean(err ** 2))), bias_G=float(err.mean()),
         r_G=float(np.corrcoef(fitted, t.loc[fitted.index, "G"])[0, 1]), rmse_G_by_atlas=by_atlas,
         true_G_sd=float(t["G"].std()), n_fitted=int(len(fitted)),
         simulated_s=round(sim_s), simulated_s_per_subject=round(sim_s / max(1, len(fitted))),
         bounds_G=res.bounds.get("G") if res.bounds else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
