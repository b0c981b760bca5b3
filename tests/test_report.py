"""raybrain.report on a small real experiment (the Hopf pattern of tests/test_tune.py).

One experiment, run once on the session's Ray instance (``ray_local``): two bundled subjects and a
synthetic one (known parameters), random search, a grid and CMA-ES with successive halving over two
fidelities, two seeds, one validation candidate per run; loss pfic with a short FCD window so the
fitted brains have an FCD. Its report is built once and checked for: every section; the numbers of
its tables against the same numbers computed here from the evaluations (ranking means and ranks,
Friedman and Wilcoxon/Holm against scipy on the same matrix, best losses against ``results.best``,
costs against ``results.analyze``, simulated seconds by hand); a page with no external resource
that renders in headless Chromium with every image loaded and no console message (skipped when
Debian's ``chromium`` is not installed). About 35 s, most of it the experiment.
"""
import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from raybrain import report
from raybrain import results as R

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["hcp/101309", "hcp/102311"]
TRUTH = {"G": 0.55, "sigma": 0.04}
BOUNDS = {"G": [0.1, 1.0], "sigma": [0.01, 0.1]}
FIDELITIES = [{"duration": 21.6, "dt": 0.08}, {"duration": 43.2, "dt": 0.08}]
OPTIMIZERS = [{"name": "random", "population": 4}, {"name": "grid", "population": 4},
              {"name": "cmaes", "label": "cmaes-sh", "population": 4, "successive_halving": True}]
SECTIONS = ["convergence", "final-fit", "brains", "recovery", "landscape"]
FIGURES = {"convergence": ["convergence-sims", "convergence-wall", "convergence-sim-seconds"],
           "final-fit": ["final-fit", "holdout"], "brains": ["brains", "parameters"],
           "recovery": ["recovery"], "landscape": ["landscape"]}
MAX_DURATION = 30.0


def config(storage):
    from raybrain.experiment import ExperimentConfig

    d = {"name": "report", "storage": str(storage), "model": {"name": "hopf"},
         "subjects": {"ids": SUBJECTS, "synthetic": [{"name": "synth", "from_subject": SUBJECTS[0], "params": TRUTH}]},
         "parametrisation": {"kind": "global", "names": ["G", "sigma"], "bounds": BOUNDS},
         "loss": "pfic",
         "simulation": {"fidelities": FIDELITIES, "burn_in": 1.44, "noise": "common", "window": 20, "step": 2,
                        "fused": "never"},  # the report under test: no kernel to compile
         "optimizers": OPTIMIZERS, "budget": {"evaluations": 8}, "seeds": 2, "validation": {"top": 1}}
    return ExperimentConfig.model_validate(d, context={"base_dir": str(REPO)})


@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory):
    from raybrain.tuning import run_experiment

    cfg = config(tmp_path_factory.mktemp("report"))
    root, errors = run_experiment(cfg)
    assert errors == 0
    out = Path(root) / "report"
    index = report.build(root, out, max_duration=MAX_DURATION)
    return cfg, Path(root), R.load(root), index


def sections_of(page: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r'<section id="([^"]+)">(.*?)</section>', page, re.S)}


def table(index: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(index.parent / "tables" / f"{name}.csv")


def top_fidelity_best_per_run(df: pd.DataFrame) -> pd.DataFrame:
    train = df[(df["phase"] == "train") & (df["fidelity"] == df["fidelity"].max())]
    return train.groupby("run_id").agg(subject=("subject", "first"), optimizer=("optimizer", "first"),
                                       best=("loss", "min")).reset_index()


def subject_matrix(df: pd.DataFrame) -> pd.DataFrame:
    runs = top_fidelity_best_per_run(df)
    return runs.groupby(["subject", "optimizer"])["best"].mean().unstack("optimizer")


# --------------------------------------------------------------------------------- the page
def test_every_section_with_its_figures(study):
    cfg, root, res, index = study
    page = index.read_text()
    secs = sections_of(page)
    assert list(secs) == SECTIONS
    for sid, names in FIGURES.items():
        for name in names:
            m = re.search(rf'<figure id="fig-{name}"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', secs[sid])
            assert m, f"figure {name} missing from section {sid}"
            png = base64.b64decode(m.group(1))
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            assert (index.parent / f"{name}.png").read_bytes() == png  # every figure also as a PNG file
    # hopf has no E/I populations: the E/I part says so instead of vanishing
    assert "reports no E/I ratio" in secs["brains"]
    for name in ("ranking", "cost", "holdout", "parameters", "brains", "recovery"):
        assert f'id="table-{name}">' in page, name
    assert "Friedman test over 3 subjects × 3 optimizers" in secs["final-fit"]


def test_page_is_self_contained(study):
    page = study[3].read_text()
    assert "<script" not in page.lower()
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', page):
        assert value.startswith(("data:", "#")), (attr, value[:80])
    assert not re.search(r"url\(|@import|https?://", page)


# ------------------------------------------------------------------------ numbers in tables
def test_ranking_matches_the_dataframe(study):
    cfg, root, res, index = study
    m = subject_matrix(res.evaluations)
    got = table(index, "ranking").set_index("optimizer")
    assert sorted(got.index) == sorted(o["label"] if "label" in o else o["name"] for o in OPTIMIZERS)
    np.testing.assert_allclose(got["mean_best"], m.mean(axis=0).reindex(got.index), rtol=1e-12)
    np.testing.assert_allclose(got["median_best"], m.median(axis=0).reindex(got.index), rtol=1e-12)
    np.testing.assert_allclose(got["mean_rank"], m.rank(axis=1).mean(axis=0).reindex(got.index), rtol=1e-12)
    assert (got["n_subjects"] == 3).all() and (got["n_runs"] == 6).all()
    assert list(got["mean_rank"]) == sorted(got["mean_rank"])  # ranked
    pd.testing.assert_frame_equal(report.ranking(res).set_index("optimizer"), got, check_dtype=False,
                                  check_exact=False, rtol=1e-12)


def test_friedman_and_wilcoxon_holm_match_scipy(study):
    cfg, root, res, index = study
    m = subject_matrix(res.evaluations)
    f = table(index, "friedman").iloc[0]
    ref = stats.friedmanchisquare(*[m[c].to_numpy() for c in m.columns])
    assert f["n_subjects"] == 3 and f["n_optimizers"] == 3
    assert f["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert f["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    pw = table(index, "pairwise")
    assert len(pw) == 3
    p = []
    for _, row in pw.iterrows():
        a, b = m[row["a"]].to_numpy(), m[row["b"]].to_numpy()
        w = stats.wilcoxon(a, b) if np.any(a != b) else None
        p.append(1.0 if w is None else w.pvalue)
        assert row["p_value"] == pytest.approx(p[-1], rel=1e-12)
        assert row["median_diff"] == pytest.approx(np.median(a - b), rel=1e-12)
    # Holm by hand: sorted p times (m - i), running maximum, capped at 1
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1, np.maximum.accumulate([(len(p) - i) * p[j] for i, j in enumerate(order)]))
    np.testing.assert_allclose(pw["p_holm"].to_numpy()[order], adj, rtol=1e-12)


def test_best_losses_and_costs_match_results(study):
    cfg, root, res, index = study
    fitted = table(index, "parameters").set_index("subject")
    best = R.best(res.evaluations, by="subject").set_index("subject")
    assert sorted(fitted.index) == sorted(SUBJECTS + ["synth"])
    for col in ("loss", "G", "sigma", "eval_index"):
        np.testing.assert_allclose(fitted[col], best.loc[fitted.index, col].astype(float), rtol=1e-12)
    assert (fitted["optimizer"] == best.loc[fitted.index, "optimizer"]).all()
    cost = table(index, "cost")
    ref = R.analyze(res.evaluations, truth=res.truth)
    assert list(cost.columns) == list(ref.columns)
    pd.testing.assert_frame_equal(cost, ref, check_dtype=False, check_exact=False, rtol=1e-12)
    h = table(index, "holdout").set_index("run_id").sort_index()
    ref = R.holdout(res.evaluations).set_index("run_id").sort_index()
    np.testing.assert_allclose(h["val_loss"], ref["val_loss"], rtol=1e-12)
    rec = table(index, "recovery")
    assert set(rec["subject"]) == {"synth"} and len(rec) == 6
    runs = res.runs.set_index("run_id")
    np.testing.assert_allclose(rec["recovery_err"], runs.loc[rec["run_id"], "recovery_err"], rtol=1e-12)
    np.testing.assert_allclose(rec["G_true"], TRUTH["G"])


def test_simulated_seconds_count_burn_in_fresh_rungs_and_continuations(study):
    cfg, root, res, index = study
    df = report.with_costs(res.evaluations, burn_in=cfg.simulation.burn_in)
    lo, hi = (f["duration"] for f in FIDELITIES)
    burn = cfg.simulation.burn_in
    for run_id, rows in df.groupby("run_id"):
        fresh = rows["new_sims"] > 0
        sims = rows["new_sims"]  # held-out rows: validation.repeats (3) simulations each
        expect = ((rows["sim_seconds"] + burn) * sims)[fresh].sum() + (rows["repeats"][~fresh] * (hi - lo)).sum()
        assert rows["cum_sim_s"].max() == pytest.approx(expect)
        if "cmaes-sh" in run_id:  # halving: 4 fresh short rungs and 2 continued ones per generation
            train = rows[rows["phase"] == "train"]
            assert train["cum_sim_s"].max() == pytest.approx(2 * (4 * (lo + burn) + 2 * (hi - lo)))
        elif "random" in run_id:
            train = rows[rows["phase"] == "train"]
            assert train["cum_sim_s"].max() == pytest.approx(8 * (hi + burn))
    # the convergence curve of a single run ends at its cost when its last top-fidelity evaluation finished
    one = res.evaluations[res.evaluations["run_id"] == "synth__random__seed0"]
    curve = report.convergence_table(one, x="sims")
    last = curve[curve["subject"] == "synth"].iloc[-1]
    train = one[one["phase"] == "train"]
    assert last["x"] == train["cum_sims"].max() and last["median"] == train["loss"].min()


def test_convergence_median_and_quartiles_over_seeds(study):
    cfg, root, res, index = study
    curves = table(index, "convergence-curves")
    runs = top_fidelity_best_per_run(res.evaluations)
    for (subject, opt), c in curves[curves["subject"] != "pooled"].groupby(["subject", "optimizer"]):
        final = runs[(runs["subject"] == subject) & (runs["optimizer"] == opt)]["best"].to_numpy()
        end = c.iloc[-1]  # every run has ended: its final best
        assert end["median"] == pytest.approx(np.median(final))
        assert end["q25"] == pytest.approx(np.percentile(final, 25))
        assert end["n_runs"] == len(final) == 2
        assert np.all(np.diff(c["median"]) <= 1e-12)  # the best so far only improves
    assert {"pooled"} < set(curves["subject"])


# --------------------------------------------------------------------- API and empty sections
def test_api_returns_figures_and_dataframes(study):
    from matplotlib.figure import Figure

    cfg, root, res, index = study
    for fig in (report.convergence(res, x="sim_seconds"), report.final_fit(res), report.landscape(res),
                report.recovery(res), report.holdout(res), report.parameters(res)):
        assert isinstance(fig, Figure)
    m = report.landscape_map(res, "synth")
    assert m["method"] == "grid" and m["grid_optimizer"] == "grid" and m["z"].shape == (2, 2)
    fits = report.resimulate(root, res, subjects=["synth"], max_duration=MAX_DURATION)
    assert len(fits) == 1 and fits[0].fc_sim.shape == (80, 80) and fits[0].fcd_sim is not None
    assert fits[0].duration <= MAX_DURATION + 0.72  # whole TRs
    assert isinstance(report.brains(fits), Figure)
    # too few subjects / nothing to show: said, not raised as anything but NothingToShow
    two = res.evaluations[res.evaluations["subject"] != "synth"]
    f = report.friedman(two).iloc[0]
    assert np.isnan(f["statistic"]) and "too few subjects" in f["note"]
    assert report.pairwise(two).empty
    with pytest.raises(report.NothingToShow, match="no synthetic subjects"):
        report.recovery(two)
    with pytest.raises(report.NothingToShow, match="no E/I ratio"):
        report.ei_ratio(res)
    assert list(report.holm([0.01, 0.04, 0.03, np.nan])[:3]) == pytest.approx([0.03, 0.06, 0.06])


def test_cli_report_without_config_or_truth_says_what_is_missing(study, tmp_path):
    from raybrain.cli import main

    cfg, root, res, index = study
    bare = tmp_path / "bare"
    shutil.copytree(root / "evaluations", bare / "evaluations")
    assert main(["report", str(bare), "--out", str(tmp_path / "out")]) == 0
    secs = sections_of((tmp_path / "out" / "index.html").read_text())
    assert list(secs) == SECTIONS
    assert "no experiment.json" in secs["brains"]
    assert "no synthetic subjects" in secs["recovery"]
    assert 'id="fig-convergence-sims"' in secs["convergence"] and 'id="fig-landscape"' in secs["landscape"]
    assert main(["report", str(tmp_path / "nowhere")]) == 2


# ------------------------------------------------------------------------------ in a browser
CHECK = """<script>
window.__rb = {errors: []};
window.addEventListener("error",
  e => window.__rb.errors.push(String(e.message || (e.target && e.target.src) || e)), true);
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const out = {n: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
               errors: window.__rb.errors, sections: [...document.querySelectorAll("section")].map(s => s.id)};
  const pre = document.createElement("pre"); pre.id = "rb-check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def test_page_renders_in_headless_chromium(study, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    page = study[3].read_text()
    n_img = page.count("<img ")
    checked = tmp_path / "check.html"
    checked.write_text(page.replace("<head>", "<head>" + CHECK, 1))
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", checked.as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="rb-check">(.*?)</pre>', p.stdout, re.S)
    assert m, f"no result from chromium (rc {p.returncode}): {p.stderr[-2000:]}"
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert got["n"] == n_img >= 9
    assert got["broken"] == [] and got["errors"] == []
    assert got["sections"] == SECTIONS
    console = [line for line in p.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []


# ------------------------------------------- what the figures say (hand-written results, no Ray)
def write_runs(root, runs, subjects=("s1", "s2"), ei=None, validation=False, test=False, gens=2, pop=3):
    """Results written directly: ``runs`` {optimizer: number of seeds}; each run ``gens`` training
    generations of ``pop`` candidates, optionally an ``ei_ratio`` per record (``ei(rng)``), one
    validation record and one test record per run."""
    w = R.ResultsWriter(root, "shown")
    rng = np.random.default_rng(1)

    def rec(**kw):
        r = {"G": rng.uniform(0, 1), "sigma": rng.uniform(0, 1), "loss": rng.uniform(0.2, 1.0), "valid": True,
             "repeats": 1, "sim_seconds": 10.0, "wall_s": 0.1, "new_sims": 1}
        if ei is not None:
            r["ei_ratio"] = float(ei(rng))
        return {**r, **kw}

    for s in subjects:
        for opt, n in runs.items():
            for seed in range(n):
                run = f"{s}__{opt}__seed{seed}"
                meta = {"mode": "population", "subject": s, "optimizer": opt, "seed": seed, "fidelity": 0,
                        "duration": 10.0, "dt": 0.01}
                for gen in range(gens):
                    w.write_generation(run, gen, [rec() for _ in range(pop)], meta)
                for phase, on in (("validation", validation), ("test", test)):
                    if on:
                        w.write_generation(run, 0, [rec(source_eval=0)], {**meta, "phase": phase, "fidelity": -1})
    return R.load(root)


def said(secs) -> str:
    """Every caption, text and note of the report's sections, and its h3 titles, as one string."""
    return "\n".join(str(x) for s in secs for b in s.blocks for x in (b.caption, b.content if isinstance(b.content, str)
                                                                      else ""))


def gids(ax, gid, kind=None) -> list:
    return [a for a in ax.get_children() if a.get_gid() == gid and (kind is None or isinstance(a, kind))]


def legend_colours(fig) -> dict:
    """label -> RGBA of every entry of the figure's (and its axes') legends."""
    from matplotlib.colors import to_rgba

    out = {}
    for leg in list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]:
        for h, t in zip(leg.legend_handles, leg.get_texts()):
            if hasattr(h, "get_offsets"):  # scatter
                c = h.get_facecolor()[0]
            elif hasattr(h, "get_marker"):  # line or marker
                c = h.get_markerfacecolor() if h.get_marker() not in (None, "None", "") else h.get_color()
            else:  # bar
                c = h.get_facecolor()
            out[t.get_text()] = to_rgba(c)
    return out


def test_boxes_only_over_five_points_else_points(tmp_path):
    """cmaes has 6 runs per subject (12 in all: a box), random 2 (4: points only); per subject
    (6 vs 2 runs) the holdout figure and the rank panel follow the same rule."""
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D

    res = write_runs(tmp_path, {"cmaes": 6, "random": 2}, validation=True)
    fig = report.final_fit(res)
    left = fig.axes[0]
    boxes = gids(left, "box", Line2D)
    assert len(boxes) == 1  # cmaes only
    order = [t.get_text() for t in left.get_xticklabels()]
    x = boxes[0].get_xdata()
    assert (min(x) + max(x)) / 2 == pytest.approx(order.index("cmaes"))
    pts = gids(left, "points", PathCollection)
    assert sum(len(p.get_offsets()) for p in pts) == 16  # every run a point, boxed or not
    assert "boxes where ≥ 5" in left.get_title()
    rank = fig.axes[1]  # 2 subjects per optimizer: no box at all
    assert gids(rank, "box") == [] and sum(len(p.get_offsets()) for p in gids(rank, "points")) == 4
    h = report.holdout(res)
    for ax in h.axes[:2]:
        assert len(gids(ax, "box")) == 1
    one = write_runs(tmp_path / "few", {"cmaes": 2, "random": 2}, subjects=("s1",), validation=True)
    assert all(gids(ax, "box") == [] for f in (report.final_fit(one), report.holdout(one)) for ax in f.axes)
    assert "too few for boxes" in report.final_fit(one).axes[0].get_title()


def test_over_seeds_only_when_there_are_seeds(tmp_path):
    one = write_runs(tmp_path / "one", {"cmaes": 1, "random": 1, "de": 1}, subjects=("s1", "s2", "s3"))
    two = write_runs(tmp_path / "two", {"cmaes": 2, "random": 2, "de": 2}, subjects=("s1", "s2", "s3"))
    assert report.figures.seeds(one) == 1 and report.figures.seeds(two) == 2
    t1 = report.convergence(one).get_suptitle()
    assert "over seeds" not in t1 and "a single seed" in t1
    assert "median and IQR over seeds" in report.convergence(two).get_suptitle()
    s1 = said(report.sections(tmp_path / "one", one, simulate=False)[0])
    s2 = said(report.sections(tmp_path / "two", two, simulate=False)[0])
    assert "seeds" not in s1.replace("a single seed", "")  # nothing over seeds: one run each
    assert "one run (one seed) per subject and optimizer" in s1 and "best loss of the one run each" in s1
    assert "median over seeds" in s2 and "mean best loss over seeds" in s2 and "mean and sd over seeds" in s2
    assert report.convergence(one, x="wall").axes[0].get_xlabel() == "simulation wall time (s), compile excluded"


def test_no_test_loss_said_without_a_test_split(tmp_path):
    val = write_runs(tmp_path / "val", {"cmaes": 1, "random": 1}, validation=True)
    both = write_runs(tmp_path / "both", {"cmaes": 1, "random": 1}, validation=True, test=True)
    f = report.holdout(val)
    assert [ax.get_title() for ax in f.axes] == ["training (best)", "validation (winner)"]
    assert "test" not in f.get_suptitle()
    secs = report.sections(tmp_path / "val", val, simulate=False)[0]
    fit = next(s for s in secs if s.id == "final-fit")
    cap = next(b.caption for b in fit.blocks if b.name == "holdout")
    assert "test" not in cap and "validation loss of its winner" in cap
    assert "Held-out validation" in [b.content for b in fit.blocks if b.kind == "h3"]
    assert [ax.get_title() for ax in report.holdout(both).axes][-1] == "test (winner)"
    fit = next(s for s in report.sections(tmp_path / "both", both, simulate=False)[0] if s.id == "final-fit")
    assert "the winner's test loss" in next(b.caption for b in fit.blocks if b.name == "holdout")
    assert "Held-out validation and test" in [b.content for b in fit.blocks if b.kind == "h3"]


def test_one_colour_per_optimizer_in_every_figure_with_a_legend(tmp_path):
    from matplotlib.colors import to_rgba

    opts = {"cmaes": 2, "de": 2, "random": 2, "tpe": 2}
    res = write_runs(tmp_path, opts, ei=lambda rng: rng.uniform(2, 5), validation=True)
    ref = {k: to_rgba(v) for k, v in report.figures.colours(list(opts)).items()}
    assert report.figures.colours(["tpe", "random", "de", "cmaes"]) == report.figures.colours(list(opts))
    # the holdout figure of a subset keeps the experiment's colours (the full results' optimizers)
    sub = R.Results(res.evaluations[~((res.evaluations["phase"] != "train") & (res.evaluations["optimizer"] == "de"))],
                    res.runs, None)
    figs = {"convergence": report.convergence(res), "final_fit": report.final_fit(res), "holdout": report.holdout(sub),
            "parameters": report.parameters(res), "landscape": report.landscape(res), "ei": report.ei_ratio(res)}
    for name, fig in figs.items():
        got = legend_colours(fig)
        shown = [o for o in opts if o != "de"] if name == "holdout" else list(opts)
        for o in shown:
            assert o in got, (name, o)
            assert got[o] == pytest.approx(ref[o]), (name, o)
        for s in set(got) & {"s1", "s2"}:  # subjects: grey markers, never an optimizer's colour
            assert got[s][0] == got[s][1] == got[s][2], (name, s)
    # final fit: a run's point has its optimizer's colour (not its subject's)
    ax = figs["final_fit"].axes[0]
    order = [t.get_text() for t in ax.get_xticklabels()]
    for p in gids(ax, "points"):
        x = int(round(p.get_offsets()[0][0]))
        assert tuple(p.get_facecolors()[0][:3]) == pytest.approx(ref[order[x]][:3])


def test_fc_matrices_name_regions_and_mark_hemispheres():
    from raybrain.data import load_subject
    from raybrain.report.brains import Brain, hemispheres

    hemi = hemispheres(load_subject("hcp/101309").labels)  # AAL2: interleaved L/R
    assert list(hemi[:4]) == ["L", "R", "L", "R"] and (hemi == "L").sum() == (hemi == "R").sum() == 40
    labels = ("A_L", "A_R", "B_L", "B_R", "C_L", "C_R")
    rng = np.random.default_rng(0)
    fc = np.corrcoef(rng.normal(size=(6, 50)))

    def brain(labels):
        return Brain(subject="s1", optimizer="cmaes", run_id="r", params={"G": 1.0}, fitted_loss=0.5, loss=0.5,
                     duration=10.0, seed=0, fc_emp=fc, fc_sim=fc, labels=labels)

    fig = report.brains([brain(labels)])
    emp = fig.axes[0]
    assert [t.get_text() for t in emp.get_yticklabels()] == ["A_L", "B_L", "C_L", "A_R", "B_R", "C_R"]
    assert [t.get_text() for t in emp.get_xticklabels()] == ["left hemisphere", "right hemisphere"]
    lines = gids(emp, "hemisphere")
    assert len(lines) == 2 and all(np.allclose(np.ravel(ln.get_xdata() if ln.get_xdata()[0] == ln.get_xdata()[1]
                                                         else ln.get_ydata()), 2.5) for ln in lines)
    shown = emp.get_images()[0].get_array()
    assert shown[0, 1] == pytest.approx(fc[0, 2]) and shown[0, 3] == pytest.approx(fc[0, 1])  # A_L–B_L, A_L–A_R
    bare = report.brains([brain(None)]).axes[0]
    assert gids(bare, "hemisphere") == [] and "hemispheres unknown" in bare.get_xlabel()
    assert bare.get_images()[0].get_array()[0, 1] == pytest.approx(fc[0, 1])  # the subject's order


def test_ei_constant_under_fic_is_said_and_per_region_otherwise(tmp_path):
    from raybrain.report.brains import Brain

    flat = write_runs(tmp_path / "flat", {"cmaes": 1, "random": 1}, ei=lambda rng: 4.19 + rng.uniform(0, 0.005))
    with pytest.raises(report.NothingToShow, match="E/I is constant under FIC.*E/I = mean S_E / mean S_I = 4.19"):
        report.ei_ratio(flat, fic=True)
    labels = ("A_L", "A_R", "B_L", "B_R")
    fits = [Brain(subject=s, optimizer=o, run_id="r", params={}, fitted_loss=0.5, loss=0.5, duration=10.0, seed=0,
                  fc_emp=np.eye(4), fc_sim=np.eye(4), labels=labels, ei=np.array([1.0, 2.0, 3.0, 4.0]) * k)
            for k, (s, o) in enumerate([("s1", "cmaes"), ("s2", "random")], start=1)]
    # no FIC: plotted, per region (hemisphere order), one line per re-simulated fit in its optimizer's colour
    fig = report.ei_ratio(flat, fits=fits, fic=False)
    lines = gids(fig.axes[1], "ei-region")
    assert len(lines) == 2
    np.testing.assert_allclose(lines[1].get_ydata(), [2.0, 6.0, 4.0, 8.0])
    col = report.figures.optimizer_colours(flat)
    assert [ln.get_color() for ln in lines] == [col["cmaes"], col["random"]]
    assert len(gids(fig.axes[1], "hemisphere")) == 1
    # FIC, but the regions differ (a regional w_EI): plotted
    assert len(report.ei_ratio(flat, fits=fits, fic=True).axes) == 2
    varied = write_runs(tmp_path / "varied", {"cmaes": 1}, ei=lambda rng: rng.uniform(2, 6))
    assert len(report.ei_ratio(varied, fic=True).axes) == 1



# ------------------------------------------------------------- hand-written results, no Ray
def test_regional_parameters_and_a_binned_landscape_from_written_results(tmp_path):
    """Results written directly (no simulation): a regional parametrisation (w_EE[i] and G), so the
    parameters figure draws regions and the landscape of > 2 parameters is binned."""
    w = R.ResultsWriter(tmp_path, "regional")
    rng = np.random.default_rng(0)
    for opt in ("random", "cmaes"):
        for seed in (0, 1):
            for gen in range(3):
                recs = [{**{f"w_EE[{i}]": rng.uniform(0, 1) for i in range(5)}, "G": rng.uniform(0, 3),
                         "loss": rng.uniform(0, 1), "valid": True, "repeats": 1, "sim_seconds": 10.0, "wall_s": 0.1,
                         "new_sims": 1} for _ in range(4)]
                w.write_generation(f"s1__{opt}__seed{seed}", gen, recs, {
                    "mode": "population", "subject": "s1", "optimizer": opt, "seed": seed, "fidelity": 0,
                    "duration": 10.0, "dt": 0.01})
    res = R.load(tmp_path)
    titles = [ax.get_title() for ax in report.parameters(res).axes]
    assert "w_EE per region (best fit)" in titles and "G" in titles
    m = report.landscape_map(res, "s1")
    assert m["method"] == "binned" and m["params"] == ("w_EE[0]", "w_EE[1]")
    assert np.nanmin(m["z"]) == res.evaluations["loss"].min()
    assert report.with_costs(res.evaluations)["cum_sim_s"].max() == 12 * 10.0
    index = report.build(tmp_path, tmp_path / "out")
    secs = sections_of(index.read_text())
    assert list(secs) == SECTIONS
    assert "too few subjects for a test" in secs["final-fit"]
    assert "no validation or test phase" in secs["final-fit"]
    assert "no experiment.json" in secs["brains"] and 'id="fig-parameters"' in secs["brains"]
    assert "no synthetic subjects" in secs["recovery"] and 'id="fig-landscape"' in secs["landscape"]


def test_validated_comparison_ties_bounds_and_profiles_in_the_report(tmp_path):
    """The final-fit section carries the noise-aware ranking (ties said, the training/validation
    disagreement said), the fits on a bound and the identifiability profiles; its CSV tables are
    the ones raybrain.report.noise computes."""
    from test_noise_stats import write_study

    from raybrain.report import noise as NZ

    res = write_study(tmp_path)
    index = report.build(tmp_path, tmp_path / "report", simulate=False)
    fit = sections_of(index.read_text())["final-fit"]
    assert 'id="table-validated-ranking">' in fit and 'id="fig-cd-diagram">' in fit and 'id="fig-profiles">' in fit
    assert "tied for the lowest validated loss" in fit and "order DISAGREE" in fit
    assert "G is within 2% of its upper bound" in fit and "PROFILE sigma: UNIDENTIFIED" in fit
    got = table(index, "validated-ranking")
    want = NZ.ranking(res)
    assert got["optimizer"].tolist() == want["optimizer"].tolist() == ["B", "A", "C"]
    np.testing.assert_allclose(got["val_mean"], want["val_mean"])
    assert table(index, "identifiability").set_index("param")["verdict"].to_dict() == {"G": "one-sided",
                                                                                      "sigma": "unidentified"}
