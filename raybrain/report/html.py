"""The report page: one self-contained HTML file (figures embedded as base64 PNG, inline CSS, no
script, no external resource: it opens offline), every figure also as a PNG file and every table
as a CSV file (full precision) next to it. An experiment whose results folder holds
``covariates.tsv`` gets a last section, **Cohort** (:mod:`raybrain.report.cohort`): one fit per
subject, its associations with the covariates (permutation p-values corrected over every test) and
their figures; other experiments have no such section.
"""
from __future__ import annotations

import base64
import html
import io
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import results as R
from . import figures as FIG
from . import stats as S
from .brains import DEFAULT_MAX_DURATION, DEFAULT_MAX_SUBJECTS, load_experiment, regional_values, resimulate
from .stats import NothingToShow

SECTIONS = (("convergence", "Convergence"), ("final-fit", "Final fit"), ("brains", "The fitted brains"),
            ("recovery", "Parameter recovery"), ("landscape", "Loss landscapes"))
DPI = 100
#: every file a report may write besides index.html; a new build first removes the old ones (a figure
#: with nothing to show this time must not survive from an earlier build)
FIGURE_FILES = ("convergence-sims", "convergence-wall", "convergence-sim-seconds", "final-fit", "holdout", "brains",
                "parameters", "ei-ratio", "recovery", "landscape", "cd-diagram", "profiles", "cohort-distributions")
TABLE_FILES = ("convergence-curves", "ranking", "friedman", "pairwise", "cost", "holdout", "brains", "parameters",
               "recovery", "validated-ranking", "validated-pairs", "at-bound", "identifiability", "cohort-fits",
               "cohort-associations")
#: the cohort section's scatter figures are named per association: removed by this pattern
COHORT_FIGURES = ("cohort-assoc-*.png", "cohort-glass-*.png")


# ------------------------------------------------------------------------------------ blocks
@dataclass
class Block:
    kind: str                  # "figure", "table", "text", "note", "h3"
    name: str = ""
    content: Any = None        # Figure, DataFrame or text
    caption: str = ""


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def figure(self, name: str, make, caption: str = "") -> Any:
        """Add the figure ``make()`` builds, or a note saying why there is none."""
        try:
            fig = make()
        except NothingToShow as e:
            self.note(str(e))
            return None
        self.blocks.append(Block("figure", name, fig, caption))
        return fig

    def table(self, name: str, df: pd.DataFrame, caption: str = "", empty: str = "") -> None:
        if df is None or df.empty:
            if empty:
                self.note(empty)
            return
        self.blocks.append(Block("table", name, df, caption))

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", content=text))

    def note(self, text: str) -> None:
        if self.blocks and self.blocks[-1].kind == "note" and self.blocks[-1].content == text:
            return  # one reason for several figures: said once
        self.blocks.append(Block("note", content=text))

    def h3(self, text: str) -> None:
        self.blocks.append(Block("h3", content=text))


# ---------------------------------------------------------------------------------- formatting
def _cell(x, column: str) -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isinf(x):
            return "never" if column.endswith("_to_target") else ("∞" if x > 0 else "−∞")
        if column.startswith("p_") or column == "p_value":
            return f"{x:.3g}" if x >= 1e-4 else f"{x:.1e}"
        if float(x).is_integer() and abs(x) < 1e9:
            return str(int(x))
        return f"{x:.4g}"
    return str(x)


def table_html(df: pd.DataFrame, max_rows: int = 200, csv: str = "") -> str:
    """``df`` as an HTML table, numbers right-aligned with 4 significant digits (full precision in
    the CSV files); the first ``max_rows`` rows."""
    more = len(df) - max_rows
    df = df.head(max_rows)
    num = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = "".join(f'<td class="{"n" if n else "t"}">{html.escape(_cell(v, str(c)))}</td>'
                        for v, c, n in zip(rec, df.columns, num))
        rows.append(f"<tr>{cells}</tr>")
    tail = (f'<p class="cap">… {more} more rows in {html.escape(csv or "the CSV file")}</p>' if more > 0 else "")
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{tail}'


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=max(DPI, getattr(fig, "report_dpi", DPI)))  # a figure may ask for more
    return buf.getvalue()


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2em auto;max-width:1300px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}nav a{margin-right:1.2em}.meta{color:#555;font-size:.92em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444;max-width:1000px}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0 1.2em}
th,td{padding:.2em .6em;border-bottom:1px solid #e4e4e4}
th{background:#f4f4f4;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#7a5b00;background:#fff8e1;border-left:3px solid #e0b000;padding:.4em .8em;margin:.6em 0}
.cap{font-size:.9em;color:#444;margin:.2em 0}.tw{overflow-x:auto}
"""


def render(title: str, meta: list[str], sections: list[Section], out: Path) -> tuple[str, list[Path]]:
    """The page's HTML; writes each figure's PNG and each table's CSV under ``out``."""
    written = []
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f'<p class="meta">{html.escape(m)}</p>' for m in meta]
    parts.append("<nav>" + "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections) + "</nav>")
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        if not any(b.kind in ("figure", "table", "note") for b in s.blocks):
            s.note("nothing to show")
        for b in s.blocks:
            if b.kind == "figure":
                data = _png(b.content)
                f = out / f"{b.name}.png"
                f.write_bytes(data)
                written.append(f)
                alt = html.escape(b.caption.split(".")[0] if b.caption else b.name, quote=True)
                cap = f"<figcaption>{html.escape(b.caption)}</figcaption>" if b.caption else ""
                parts.append(f'<figure id="fig-{b.name}"><img alt="{alt}" src="data:image/png;base64,'
                             f'{base64.b64encode(data).decode()}">{cap}</figure>')
            elif b.kind == "table":
                f = out / "tables" / f"{b.name}.csv"
                b.content.to_csv(f, index=False)
                written.append(f)
                if b.caption:
                    parts.append(f'<p class="cap">{html.escape(b.caption)}</p>')
                parts.append(f'<div class="tw" id="table-{b.name}">'
                             f'{table_html(b.content, csv=f"tables/{b.name}.csv")}</div>')
            elif b.kind == "text":
                parts.append(f"<p>{html.escape(b.content)}</p>")
            elif b.kind == "note":
                parts.append(f'<p class="note">{html.escape(b.content)}</p>')
            elif b.kind == "h3":
                parts.append(f"<h3>{html.escape(b.content)}</h3>")
        parts.append("</section>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            '<link rel="icon" href="data:,">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    return page, written


# ------------------------------------------------------------------------------------- build
def _bounds(res: R.Results, cfg) -> dict | None:
    if res.truth and res.truth.get("bounds"):
        return res.truth["bounds"]
    if cfg is None:
        return None
    try:
        subs = S.subjects(res)
        par = cfg.build_parametrisation(subs[0]) if subs else None
    except Exception:  # bounds only scale the axes
        return None
    return None if par is None else {n: [float(lo), float(hi)] for n, (lo, hi) in zip(par.names, par.bounds)}


def sections(path, res: R.Results | None = None, *, simulate: bool = True,
             max_duration: float = DEFAULT_MAX_DURATION, seed: int = 0, max_subjects: int = DEFAULT_MAX_SUBJECTS,
             tol: float = 0.05, cfg=None, log=None) -> tuple[list[Section], dict]:
    """The report's sections (figures and tables, not yet rendered) and facts for its header."""
    log = log or (lambda msg: None)
    path = Path(path)
    res = res if res is not None else R.load(path)
    df = res.evaluations
    cfg_note = ""
    if cfg is None and (path / "experiment.json").is_file():
        try:
            cfg = load_experiment(path)
        except Exception as e:  # an old or edited experiment.json: report what the dataframe holds
            cfg_note = f"experiment.json could not be read ({' '.join(str(e).split())[:300]})"
    burn_in = float(cfg.simulation.burn_in) if cfg is not None else 0.0
    bounds = _bounds(res, cfg)
    pct = f"{tol:.0%}"
    # what the points are: "over seeds" only where a subject × optimizer has several runs
    multi = FIG.seeds(res) > 1
    over_seeds = "the mean over seeds of " if multi else ""
    out = [Section(i, t) for i, t in SECTIONS]
    conv, fit, brain, rec, land = out

    # convergence
    log("convergence")
    for x, name in (("sims", "convergence-sims"), ("wall", "convergence-wall"),
                    ("sim_seconds", "convergence-sim-seconds")):
        cap = {"sims": "Simulations started (cum_sims): a candidate simulated with R noise repeats counts R; "
                       "a rung that continued a cheaper rung's simulation counts 0.",
               "wall": "Simulation wall time (cum_wall_s): the sum of the evaluations' wall_s over the run, "
                       "cheaper fidelities included; kernel compile and start-up (compile_s), queueing and "
                       "optimizer time are not counted.",
               "sim_seconds": f"Simulated seconds: model time integrated, times noise repeats; a fresh "
                              f"simulation is charged its recorded BOLD seconds plus the burn-in "
                              f"({burn_in:g} s), a continued one only the seconds added to the rung below."}[x]
        conv.figure(name, lambda x=x: FIG.convergence(res, x, burn_in=burn_in),
                    cap + (" Lines: median over seeds of the best training loss so far at the top fidelity; "
                           "bands: interquartile range (a run keeps its final best after it ends)." if multi else
                           " Lines: the best training loss so far at the top fidelity of the one run (one seed) "
                           "per subject and optimizer, so the subject panels have no band.")
                    + " The pooled panel (median and interquartile band over every subject's runs) "
                    "shows every subject's runs as the excess over that subject's best loss, relative to it "
                    f"(dashed: {pct}).")
        if x == "sims":
            curves = S.convergence_table(res, x, burn_in)
            if not curves.empty:
                conv.blocks.append(Block("table-csv", "convergence-curves", curves))
    # final fit
    log("final fit")
    fit.figure("final-fit", lambda: FIG.final_fit(res),
               "Left: each run's best training loss (top fidelity), one point per run (colour: optimizer, marker: "
               "subject). Right: each optimizer's rank on each subject with a result for every optimizer ("
               + ("by the mean best loss over seeds" if multi else "one run each, so one seed decides")
               + "; 1 = best). "
               f"Boxes (median, quartiles, whiskers to 1.5 IQR) only over at least {FIG.MIN_BOX} points; "
               "smaller groups are shown as points only.")
    rank = S.ranking(res, tol)
    fit.table("ranking", rank, "Ranking across subjects: mean_best/median_best over subjects of "
              f"{over_seeds}each run's best loss; mean_rank over the subjects with every optimizer (1 = best); "
              f"wins: subjects where it is best; reached: runs within {pct} of their subject's best; "
              "sims/wall_s_to_target: median over subjects of the median cost to get there.",
              empty="no training evaluation with a finite loss at the top fidelity")
    fr = S.friedman(res)
    r0 = fr.iloc[0]
    if np.isfinite(r0["statistic"]):
        fit.text(f"Friedman test over {r0['n_subjects']} subjects × {r0['n_optimizers']} optimizers "
                 f"({'mean best loss over seeds' if multi else 'best loss of the one run each'}): "
                 f"χ² = {r0['statistic']:.4g}, p = {r0['p_value']:.3g}"
                 + (" (the optimizers differ at the 5 % level; the pairwise tests say which)." if r0["p_value"] < 0.05
                    else " (no evidence at the 5 % level that the optimizers differ; read the pairwise tests "
                         "with that in mind)."))
    elif not rank.empty:
        fit.note(str(r0["note"]))
    fit.blocks.append(Block("table-csv", "friedman", fr))
    pw = S.pairwise(res)
    if not pw.empty:
        n = int(pw["n_subjects"].iloc[0])
        fit.table("pairwise", pw, "Post-hoc pairwise Wilcoxon signed-rank tests (two-sided) over subjects, "
                  "Holm-corrected; median_diff = a − b (negative: a found lower losses)."
                  + (f" With {n} subjects no pair can reach p < 0.05 (the smallest two-sided exact p is "
                     f"{2 / 2 ** n:.3g})." if n < 6 else ""))
    fit.h3(f"Cost to reach within {pct} of the best")
    fit.table("cost", S.cost(res, tol), "Per subject × optimizer (raybrain analyze): best loss "
              + ("mean and sd over seeds" if multi else "of the one run (one seed: no sd)")
              + f", runs that reached within {pct} of the subject's best loss (by any optimizer), and the median "
              "simulations and wall time they took to get there (never: most runs did not).",
              empty="no training evaluation with a finite loss at the top fidelity")
    test = FIG.has_test(res)  # no test split: no word of a test loss
    fit.h3("Held-out validation and test" if test else "Held-out validation")
    if fit.figure("holdout", lambda: FIG.holdout(res),
                  "Each run's best training loss and the validation loss of its winner (its best candidates "
                  "simulated again with fresh noise on the validation targets)"
                  + (" and the winner's test loss." if test else ".")
                  + f" Boxes only over at least {FIG.MIN_BOX} runs; fewer are shown as points only."):
        h = S.holdout(res)
        fit.table("holdout", h.drop(columns=["test_loss"]) if h["test_loss"].isna().all() else h)
    # the fitted brains
    log("fitted brains")
    fits = []
    if not simulate:
        brain.note("re-simulation skipped (--no-simulate)")
    elif cfg is None:
        brain.note("cannot simulate the best fits again: " + (cfg_note or "no experiment.json in the results"))
    else:
        try:
            fits = resimulate(path, res, max_duration=max_duration, seed=seed, max_subjects=max_subjects, cfg=cfg)
        except NothingToShow as e:
            brain.note(str(e))
        except Exception as e:  # optional: a failure here must not cost the rest of the report
            print(f"raybrain report: re-simulation failed: {e!r}", file=sys.stderr)
            brain.note(f"re-simulation failed: {' '.join(str(e).split())[:300] or type(e).__name__}")
    every = "over every optimizer and seed" if multi else "over every optimizer"
    if fits:
        from .brains import hemispheres

        if any(hemispheres(b.labels) is not None for b in fits):
            regions = ("FC regions are ordered left hemisphere, then right, as the region names say (black lines: "
                       "the hemisphere boundary), each region named on the empirical FC's y axis.")
        elif any(b.labels is not None for b in fits):
            regions = "FC regions are in the subject's order, named on the empirical FC's y axis."
        else:
            regions = ("FC regions are in the subject's order: the subject has no region names, so no hemispheres "
                       "are marked.")
        brain.figure("brains", lambda: FIG.brains(fits, max_subjects, optimizers=S.optimizers(res)),
                     f"Each subject's best candidate ({every}) simulated again with the "
                     f"experiment's objective at the top fidelity's dt, fresh noise (seed {seed}), for at most "
                     f"{max_duration:g} s of BOLD; left: empirical and simulated FC; right: FCD distributions (the "
                     f"simulated one in the colour of the optimizer that found the fit). {regions}")
        brain.table("brains", pd.DataFrame([{
            "subject": b.subject, "optimizer": b.optimizer, "fitted_loss": b.fitted_loss, "loss": b.loss,
            "duration": b.duration, "fc_corr": b.fc_corr, "fcd_ks": b.fcd_ks,
            "ei_ratio": b.record.get("ei_ratio"), "rate_mean": b.record.get("rate_mean")} for b in fits]),
            "The re-simulations: loss in the search (fitted_loss) and in this simulation (loss), FC correlation "
            "and FCD KS distance to the empirical features.")
    brain.h3("Fitted parameters")
    fp = S.fitted_parameters(res)
    brain.table("parameters", fp, f"Each subject's best fit {every}.",
                empty="no training evaluation with a finite loss at the top fidelity")
    regional = {b.subject: b.regional for b in fits if b.regional}
    if not regional and cfg is not None and cfg.parametrisation.kind == "maps" and not fp.empty:
        try:
            for _, row in fp.head(max_subjects).iterrows():
                values = {n: row[n] for n in R.param_columns(df)}
                regional[row["subject"]] = regional_values(cfg, row["subject"], values)
        except Exception as e:  # pragma: no cover - only the maps plot is lost
            print(f"raybrain report: regional maps: {e!r}", file=sys.stderr)
    brain.figure("parameters", lambda: FIG.parameters(res, bounds=bounds, regional=regional),
                 "Bars: each subject's best fit; dots: each optimizer's best fit; y axes span the search range. "
                 "Regional parametrisations: the fitted value of each region.")
    brain.h3("E/I ratio")
    try:  # FIC clamps the excitatory rate: E/I may be a constant of the model (then said, not plotted)
        fic = bool(getattr(cfg.model.build(), "fic", False)) if cfg is not None else None
    except Exception:
        fic = None
    regional_ei = any(getattr(b, "ei", None) is not None for b in fits)
    brain.figure("ei-ratio", lambda: FIG.ei_ratio(res, fits=fits, fic=fic),
                 "Left: time-mean S_E / time-mean S_I, averaged over regions, of each subject's best fit (bars) and "
                 "each optimizer's (dots). "
                 + ("Right: the same per region for each subject's best fit simulated again (colour: the optimizer "
                    "that found it; line style: the subject)." if regional_ei else
                    "No per-region E/I: the best fits were not simulated again.")
                 + (" The model uses feedback inhibition control (w_IE set per region so the excitatory rate sits "
                    "at its target), so E/I varies only through what the fit changes in the inhibitory population."
                    if fic else ""))
    # parameter recovery
    log("parameter recovery")
    if rec.figure("recovery", lambda: FIG.recovery(res),
                  "Synthetic subjects: each run's best candidate against the true parameters (dashed: identity; "
                  "axes span the search range), and the recovery error: RMS over parameters of the distance "
                  "to the truth in units of the search range (0: exact, ~0.4: a random point)."):
        rec.table("recovery", S.recovery(res))
    # landscapes
    log("loss landscapes")
    land.figure("landscape", lambda: FIG.landscape(res, bounds=bounds),
                "The loss over the first two parameters: a grid optimizer's map where one sampled them on a grid, "
                "else every evaluation's loss interpolated (two parameters) or the lowest per bin (more), with "
                "every optimizer's samples on top; star: the best sample; cross: the truth (synthetic subjects).")
    # noise-aware comparison, bounds and identifiability (raybrain.report.noise): the final fit's last part
    log("validated comparison")
    from . import noise as NZ

    if getattr(res, "bounds", None) is None and bounds:
        res.bounds = bounds
    fit.h3("Validated comparison: differences within noise are ties")
    NZ.section(res, fit)
    # cohort (group effects of covariates): only for an experiment with covariates.tsv
    from . import cohort as CO

    if (path / CO.COVARIATES_FILE).is_file():
        log("cohort")
        coh = Section("cohort", "Cohort")
        try:
            CO.section(res, coh, path, brains=fits, cfg=cfg)
        except ValueError as e:  # a malformed covariates file: said in its section, the rest of the report stands
            coh.note(f"cohort analysis not possible: {' '.join(str(e).split())[:300]}")
        out.append(coh)
    facts = {"cfg": cfg, "cfg_note": cfg_note, "burn_in": burn_in}
    return out, facts


def build(path, out=None, *, simulate: bool = True, max_duration: float = DEFAULT_MAX_DURATION, seed: int = 0,
          max_subjects: int = DEFAULT_MAX_SUBJECTS, tol: float = 0.05, log=None) -> Path:
    """Write the report of the experiment whose results are in ``path`` to ``out`` (default
    ``path/report``): ``index.html`` (self-contained), one PNG per figure, ``tables/*.csv``.
    Returns the path of ``index.html``. ``simulate=False`` skips re-simulating the best fits;
    ``max_duration`` caps their simulated BOLD seconds."""
    path = Path(path)
    out = Path(out) if out is not None else path / "report"
    res = R.load(path)
    secs, facts = sections(path, res, simulate=simulate, max_duration=max_duration, seed=seed,
                           max_subjects=max_subjects, tol=tol, log=log)
    df = res.evaluations
    cfg = facts["cfg"]
    name = str(df["experiment"].iloc[0]) if not df.empty else (cfg.name if cfg is not None else path.name)
    meta = [f"results: {path.resolve()}",
            f"{len(df)} evaluations, {df['run_id'].nunique()} runs, {len(S.subjects(res))} subjects, "
            f"optimizers: {', '.join(S.optimizers(res)) or 'none'}"]
    if cfg is not None:
        f = cfg.simulation.fidelities
        meta.append(f"model {cfg.model.name}, loss {cfg.loss}, parametrisation {cfg.parametrisation.kind} "
                    f"({', '.join(R.param_columns(df))}), fidelities "
                    + ", ".join(f"{x.duration:g} s at dt {x.dt:g} s" for x in f)
                    + f", burn-in {facts['burn_in']:g} s, {cfg.simulation.repeats} repeat(s), "
                    f"noise {cfg.simulation.noise}")
    elif facts["cfg_note"]:
        meta.append(facts["cfg_note"])
    meta.append(f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by raybrain report; "
                "tables in full precision: tables/*.csv next to this page")
    out.mkdir(parents=True, exist_ok=True)
    for f in [out / f"{n}.png" for n in FIGURE_FILES] + [out / "tables" / f"{n}.csv" for n in TABLE_FILES]:
        f.unlink(missing_ok=True)
    for f in (f for pattern in COHORT_FIGURES for f in out.glob(pattern)):
        f.unlink(missing_ok=True)
    for s in secs:  # CSV-only tables
        for b in [b for b in s.blocks if b.kind == "table-csv"]:
            (out / "tables").mkdir(parents=True, exist_ok=True)
            b.content.to_csv(out / "tables" / f"{b.name}.csv", index=False)
        s.blocks = [b for b in s.blocks if b.kind != "table-csv"]
    page, _ = render(f"raybrain report: {name}", meta, secs, out)
    index = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(index)
    for s in secs:  # free the figures' memory
        for b in s.blocks:
            if b.kind == "figure":
                b.content.clear()
    return index
