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
         "simulation": {"fidelities": FIDELITIES, "burn_in": 1.44, "noise": "common", "window": 20, "step": 2},
         "optimizers": OPTIMIZERS, "budget": {"evaluations": 8}, "seeds": 2, "validation": {"top": 1}}
    return ExperimentConfig.model_validate(d, context={"base_dir": str(REPO)})


@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory):
    from raybrain.search.tune import run_experiment

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
        expect = fresh.sum() * burn + rows.loc[fresh, "sim_seconds"].sum() + (~fresh).sum() * (hi - lo)
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
