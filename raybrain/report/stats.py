"""The report's numbers: tables computed from the evaluations dataframe (no plotting, no Ray).

Every function takes the results (:class:`raybrain.results.Results`, its ``evaluations``
dataframe, or an experiment's results directory) and returns a DataFrame. They rank, like
:mod:`raybrain.results`, only training evaluations at the experiment's highest fidelity.

Costs on the convergence x axes, per run, in evaluation order (:func:`with_costs`):

* ``cum_sims``: simulations started (``raybrain.results.load``'s column);
* ``cum_wall_s``: simulator wall time (``load``'s column);
* ``cum_sim_s``: *simulated seconds*: model time integrated, summed over noise repeats. An
  evaluation that started its simulations (``new_sims`` > 0) is charged ``new_sims × (sim_seconds
  + burn_in)``; one that continued a lower rung's simulation (``new_sims`` 0: successive halving,
  ASHA) is charged ``repeats × (sim_seconds − the seconds its run had already simulated for that
  candidate at the rung below)``. ``sim_seconds`` is the recorded BOLD duration (burn-in
  excluded), so ``burn_in`` (``simulation.burn_in`` of the experiment; :func:`raybrain.report.build`
  reads it from ``experiment.json``) is added per fresh simulation; the default 0 counts recorded
  seconds only.
"""
from __future__ import annotations

import math
import os
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .. import results as R

#: x axes of :func:`convergence_table`: name -> (cost column, axis label)
X_AXES = {"sims": ("cum_sims", "simulations started"),
          "wall": ("cum_wall_s", "simulation wall time (s), compile excluded"),
          "sim_seconds": ("cum_sim_s", "simulated seconds (model time × repeats)")}
MIN_SUBJECTS = 3  # fewer complete subjects than this: no Friedman / Wilcoxon test


class NothingToShow(ValueError):
    """A section or figure has no data in these results; the message says why (the report prints it)."""


# ------------------------------------------------------------------------------------ inputs
def as_results(res) -> R.Results:
    """``res`` as :class:`raybrain.results.Results`: Results as is, a path is loaded, a bare
    evaluations dataframe is wrapped (its run summaries recomputed, no truth)."""
    if isinstance(res, R.Results):
        return res
    if isinstance(res, pd.DataFrame):
        return R.Results(res, R.summary(res), None)
    if isinstance(res, (str, os.PathLike)):
        return R.load(Path(res))
    raise TypeError(f"expected raybrain.results.Results, an evaluations DataFrame or a results path, "
                    f"got {type(res).__name__}")


def _df(res) -> pd.DataFrame:
    return as_results(res).evaluations


def top_fidelity(df: pd.DataFrame) -> pd.DataFrame:
    """Training rows at their experiment's highest fidelity with a finite loss, in run and
    evaluation order (the rows whose losses compare)."""
    df = df[df["phase"] == "train"] if "phase" in df else df
    if df.empty:
        return df
    df = df[df["fidelity"] == df.groupby("experiment")["fidelity"].transform("max")]
    df = df[np.isfinite(df["loss"].astype(float))]
    return df.sort_values(["run_id", "eval_index"], kind="stable")


def optimizers(res) -> list[str]:
    """Optimizer labels, sorted (colours follow this order in every figure)."""
    df = _df(res)
    return sorted(df["optimizer"].dropna().astype(str).unique()) if not df.empty else []


def subjects(res) -> list[str]:
    """The fitted targets (training subjects), sorted."""
    df = _df(res)
    train = df[df["phase"] == "train"] if "phase" in df else df
    return sorted(train["subject"].dropna().astype(str).unique())


# ------------------------------------------------------------------------------------- costs
def sim_seconds(df: pd.DataFrame, burn_in: float = 0.0) -> pd.Series:
    """Simulated seconds charged to each evaluation (module docstring), aligned with ``df``."""
    if df.empty:
        return pd.Series(dtype=float, index=df.index)
    rec = (df["sim_seconds"] if "sim_seconds" in df else df["duration"]).astype(float)
    rec = rec.fillna(df["duration"].astype(float))
    reps = df["repeats"].astype("Float64").fillna(1.0).astype(float) if "repeats" in df \
        else pd.Series(1.0, index=df.index)
    sims = df["new_sims"].astype("Float64").fillna(pd.Series(reps, index=df.index).astype("Float64")) \
        .astype(float) if "new_sims" in df else reps
    fresh = sims * (rec + float(burn_in))
    # a continued candidate: the seconds already simulated are those of the rung below (same run,
    # phase and generation; every candidate of a rung records the same duration)
    key = ["run_id", "phase", "generation"]
    below = df[key + ["fidelity"]].copy()
    below["_rec"] = rec
    below = below.groupby(key + ["fidelity"], sort=False)["_rec"].max().reset_index()
    below["fidelity"] = below["fidelity"] + 1
    prev = df[key + ["fidelity"]].merge(below, on=key + ["fidelity"], how="left")["_rec"].to_numpy()
    prev = np.where(np.isfinite(prev), prev, 0.0)
    cont = reps * np.clip(rec.to_numpy() - prev, 0.0, None)
    return pd.Series(np.where(sims.to_numpy() > 0, fresh.to_numpy(), cont), index=df.index, dtype=float)


def with_costs(df: pd.DataFrame, burn_in: float = 0.0) -> pd.DataFrame:
    """``df`` plus ``sim_s`` (:func:`sim_seconds`) and its per-run running sum ``cum_sim_s``, in
    the evaluation order of ``cum_sims`` / ``cum_wall_s``."""
    out = df.copy()
    out["sim_s"] = sim_seconds(df, burn_in)
    order = out.sort_values(["run_id", "eval_index"], kind="stable").index
    out.loc[order, "cum_sim_s"] = out.loc[order].groupby("run_id", sort=False)["sim_s"].cumsum()
    return out


# ------------------------------------------------------------------------------- convergence
def best_so_far(res, x: str = "sims", burn_in: float = 0.0, relative: bool = False) -> pd.DataFrame:
    """Per run, the best training loss at the top fidelity found so far, at each top-fidelity
    evaluation: columns ``run_id, subject, optimizer, seed, x, best``; ``x`` is the run's cost
    (:data:`X_AXES`) when that evaluation finished (cheaper rungs before it included).
    ``relative``: ``best`` as the excess over the subject's best loss found by any optimizer,
    L*, relative to |L*| (absolute when L* = 0); this is what the pooled panel shows."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {sorted(X_AXES)}, got {x!r}")
    col = X_AXES[x][0]
    df = _df(res)
    if df.empty:
        return pd.DataFrame(columns=["run_id", "subject", "optimizer", "seed", "x", "best"])
    df = with_costs(df, burn_in) if col == "cum_sim_s" else df
    top = top_fidelity(df)
    out = top[["run_id", "subject", "optimizer", "seed"]].copy()
    out["x"] = top[col].astype(float).to_numpy()
    out["best"] = top["loss"].astype(float).groupby(top["run_id"], sort=False).cummin().to_numpy()
    if relative and not out.empty:
        target = out.groupby("subject")["best"].transform("min")
        denom = target.abs().where(target.abs() > 0, 1.0)
        out["best"] = (out["best"] - target) / denom
    return out.reset_index(drop=True)


def _grid(xs: np.ndarray, n: int = 200) -> np.ndarray:
    u = np.unique(xs[np.isfinite(xs)])
    if len(u) <= n:
        return u
    return np.unique(np.concatenate([np.linspace(u[0], u[-1], n), u[[0, -1]]]))


def _band(curves: pd.DataFrame, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Median and quartiles over runs of step functions (best so far), on ``grid``. A run is
    undefined (NaN, left out) before its first top-fidelity evaluation and keeps its final best
    after its last."""
    rows = []
    for _, c in curves.groupby("run_id", sort=False):
        xs, ys = c["x"].to_numpy(float), c["best"].to_numpy(float)
        i = np.searchsorted(xs, grid, side="right") - 1
        rows.append(np.where(i >= 0, ys[np.clip(i, 0, None)], np.nan))
    m = np.vstack(rows)
    n = np.sum(np.isfinite(m), axis=0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanpercentile(m, [25, 50, 75], axis=0) if m.size else np.full((3, len(grid)), np.nan)
    return {"median": q[1], "q25": q[0], "q75": q[2], "n_runs": n}


def convergence_table(res, x: str = "sims", burn_in: float = 0.0) -> pd.DataFrame:
    """The convergence curves: per subject (and ``subject == "pooled"``: every subject, as the
    relative excess over each subject's best, see :func:`best_so_far`) × optimizer, on a grid of
    ``x`` (the distinct costs, at most ~200 points, from the first cost at which every run of the
    group has a top-fidelity evaluation): ``median``, ``q25``, ``q75`` of the best loss so far over
    runs (seeds; a run that ended keeps its final best) and ``n_runs``."""
    cols = ["subject", "optimizer", "x", "median", "q25", "q75", "n_runs"]
    parts = []
    for pooled in (True, False):
        bs = best_so_far(res, x, burn_in, relative=pooled)
        if bs.empty:
            continue
        if pooled:
            bs = bs.assign(subject="pooled")
        for (subject, opt), g in bs.groupby(["subject", "optimizer"], sort=True):
            # from where every run has a value: the median of non-increasing curves stays non-increasing
            start = g.groupby("run_id", sort=False)["x"].min().max()
            grid = _grid(g["x"].to_numpy(float))
            grid = grid[grid >= start]
            band = _band(g, grid)
            parts.append(pd.DataFrame({"subject": subject, "optimizer": opt, "x": grid, **band}))
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    out.attrs["x"] = x
    return out


# ---------------------------------------------------------------------------------- final fit
def run_best(res) -> pd.DataFrame:
    """One row per run: ``run_id, subject, optimizer, seed, best`` (its lowest top-fidelity
    training loss, :func:`raybrain.results.best`)."""
    b = R.best(_df(res), by="run_id") if not _df(res).empty else pd.DataFrame()
    if b.empty:
        return pd.DataFrame(columns=["run_id", "subject", "optimizer", "seed", "best"])
    return b[["run_id", "subject", "optimizer", "seed", "loss"]].rename(columns={"loss": "best"})


def cost(res, tol: float = 0.05) -> pd.DataFrame:
    """:func:`raybrain.results.analyze` (best loss mean ± sd over seeds, cost to reach within
    ``tol`` of the subject's best, held-out losses, recovery)."""
    r = as_results(res)
    return R.analyze(r.evaluations, tol=tol, truth=r.truth)


def score_matrix(res) -> pd.DataFrame:
    """Subjects × optimizers: each cell the mean over seeds of the runs' best losses (``best_mean``
    of :func:`raybrain.results.analyze`); only subjects where every optimizer has a result
    (the complete blocks a paired test needs)."""
    a = cost(res)
    if a.empty:
        return pd.DataFrame()
    m = a.pivot(index="subject", columns="optimizer", values="best_mean")
    order = [o for o in optimizers(res) if o in m.columns]
    return m[order].dropna(axis=0, how="any").astype(float)


def ranking(res, tol: float = 0.05) -> pd.DataFrame:
    """Optimizers ranked across subjects, one row each, sorted by ``mean_rank``:

    - ``n_subjects``, ``n_runs``; ``mean_best``, ``median_best``: over subjects, of the mean over
      seeds of the runs' best losses (``best_mean`` of :func:`raybrain.results.analyze`);
    - ``mean_rank``: the mean over the complete subjects (:func:`score_matrix`) of the optimizer's
      rank on that subject (1 = lowest mean best loss; ties share the average rank), ``wins``:
      subjects where it has rank 1 (alone or tied); NaN / 0 without complete subjects;
    - ``reached``: runs that came within ``tol`` of their subject's best, of ``n_runs``;
      ``sims_to_target``, ``wall_s_to_target``: the median over subjects of analyze's medians
      (inf where most never got there);
    - ``val_mean``, ``test_mean`` (mean over subjects), where the held-out phases exist."""
    a = cost(res, tol)
    cols = ["optimizer", "n_subjects", "n_runs", "mean_best", "median_best", "mean_rank", "wins", "reached",
            "sims_to_target", "wall_s_to_target"]
    if a.empty:
        return pd.DataFrame(columns=cols)
    g = a.groupby("optimizer", sort=False)
    out = pd.DataFrame({"n_subjects": g["subject"].nunique(), "n_runs": g["n_seeds"].sum(),
                        "mean_best": g["best_mean"].mean(), "median_best": g["best_mean"].median(),
                        "reached": g["reached"].sum(), "sims_to_target": g["sims_to_target"].median(),
                        "wall_s_to_target": g["wall_s_to_target"].median()})
    m = score_matrix(res)
    if not m.empty:
        ranks = m.rank(axis=1, method="average")
        out["mean_rank"] = ranks.mean(axis=0).reindex(out.index)
        out["wins"] = m.eq(m.min(axis=1), axis=0).sum(axis=0).reindex(out.index).fillna(0).astype(int)
    else:
        out["mean_rank"], out["wins"] = np.nan, 0
    for c in ("val_mean", "test_mean"):
        if c in a:
            out[c] = g[c].mean()
            cols.append(c)
    order = {o: i for i, o in enumerate(optimizers(res))}
    out = out.reset_index()
    out["_o"] = out["optimizer"].map(order)
    out = out.sort_values(["mean_rank", "mean_best", "_o"], kind="stable", na_position="last")
    out = out.drop(columns="_o").reset_index(drop=True)[cols]
    out.attrs["tol"] = tol
    return out


def _adjusted(p, adjust) -> np.ndarray:
    """``adjust(sorted finite p) -> adjusted`` applied to the finite entries of ``p`` in ascending
    order; NaN stays NaN and is not counted in m."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok):
        order = ok[np.argsort(p[ok], kind="stable")]
        out[order] = adjust(p[order], len(ok))
    return out


def holm(p) -> np.ndarray:
    """Holm–Bonferroni (1979) adjusted p-values (family-wise error): (m − i + 1)·p_(i), made
    monotone from the smallest up, capped at 1; NaN stays NaN and is not counted."""
    return _adjusted(p, lambda q, m: np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q)))


def fdr_bh(p) -> np.ndarray:
    """Benjamini–Hochberg (1995) adjusted p-values (false discovery rate): p_(i)·m/i, made
    monotone from the largest down, capped at 1; NaN stays NaN and is not counted."""
    return _adjusted(p, lambda q, m: np.minimum(1.0, np.minimum.accumulate((q * m / np.arange(1, m + 1))[::-1])[::-1]))


def friedman(res, min_subjects: int = MIN_SUBJECTS) -> pd.DataFrame:
    """The Friedman test over subjects (blocks) × optimizers (treatments) on :func:`score_matrix`,
    one row: ``n_subjects, n_optimizers, statistic, p_value, note``. With fewer than 3 optimizers
    or ``min_subjects`` complete subjects (subjects with a result for every optimizer) the statistic
    is NaN and ``note`` says why."""
    from scipy import stats

    m = score_matrix(res)
    n, k = m.shape if not m.empty else (0, 0)
    stat = p = np.nan
    note = ""
    if k < 2:
        note = f"{'a single optimizer' if k else 'no optimizer'}: nothing to compare"
    elif n < min_subjects:
        note = (f"too few subjects for a test: {n} subject(s) with a result for every optimizer, "
                f"at least {min_subjects} are needed (for the Friedman test and the pairwise Wilcoxon tests)")
    elif k < 3:
        note = ("the Friedman test needs at least 3 optimizers, these results have 2: the pairwise Wilcoxon "
                "signed-rank test is the paired test")
    elif np.all(m.to_numpy() == m.to_numpy()[:, :1]):
        note = "every optimizer reached the same loss on every subject: nothing to test"
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = stats.friedmanchisquare(*[m[c].to_numpy() for c in m.columns])
        stat, p = float(r.statistic), float(r.pvalue)
        note = f"Friedman chi-square over {n} subjects × {k} optimizers"
    return pd.DataFrame([{"n_subjects": n, "n_optimizers": k, "statistic": stat, "p_value": p, "note": note}])


def pairwise(res, min_subjects: int = MIN_SUBJECTS, alpha: float = 0.05) -> pd.DataFrame:
    """Post-hoc pairwise two-sided Wilcoxon signed-rank tests between optimizers over the complete
    subjects (:func:`score_matrix`), Holm-corrected over the pairs: ``a, b, n_subjects,
    median_diff`` (a − b: negative means a found lower losses), ``statistic, p_value, p_holm,
    significant`` (p_holm < ``alpha``), ``better``. Empty with fewer than ``min_subjects`` complete
    subjects or one optimizer. Pairs with identical results get p = 1."""
    from scipy import stats

    cols = ["a", "b", "n_subjects", "median_diff", "statistic", "p_value", "p_holm", "significant", "better"]
    m = score_matrix(res)
    if m.empty or m.shape[1] < 2 or m.shape[0] < min_subjects:
        return pd.DataFrame(columns=cols)
    rows = []
    for a, b in combinations(m.columns, 2):
        d = m[a].to_numpy() - m[b].to_numpy()
        if np.all(d == 0):
            stat, p = 0.0, 1.0
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = stats.wilcoxon(m[a].to_numpy(), m[b].to_numpy())
            stat, p = float(r.statistic), float(r.pvalue)
        med = float(np.median(d))
        rows.append({"a": a, "b": b, "n_subjects": len(d), "median_diff": med, "statistic": stat, "p_value": p})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p_value"])
    out["significant"] = out["p_holm"] < alpha
    out["better"] = np.where(out["median_diff"] < 0, out["a"], np.where(out["median_diff"] > 0, out["b"], "-"))
    out.attrs["alpha"] = alpha
    return out[cols]


def holdout(res) -> pd.DataFrame:
    """Per run with held-out phases: ``run_id, subject, optimizer, seed, best`` (training),
    ``val_loss``, ``test_loss`` (:func:`raybrain.results.holdout`); empty without them."""
    df = _df(res)
    h = R.holdout(df)
    cols = ["run_id", "subject", "optimizer", "seed", "best", "val_loss", "test_loss"]
    if h.empty:
        return pd.DataFrame(columns=cols)
    out = run_best(res).merge(h[["run_id", "val_loss", "test_loss"]], on="run_id", how="inner")
    return out[cols].reset_index(drop=True)


# ----------------------------------------------------------------------------- fitted brains
def fitted_parameters(res) -> pd.DataFrame:
    """Each subject's best fit over every optimizer and seed (:func:`raybrain.results.best` by
    subject): ``subject, optimizer, seed, run_id, eval_index, loss``, the parameters, then
    ``ei_ratio`` and ``rate_mean`` where the model reports them."""
    df = _df(res)
    if df.empty:
        return pd.DataFrame()
    b = R.best(df, by="subject")
    cols = ["subject", "optimizer", "seed", "run_id", "eval_index", "loss"] + R.param_columns(df)
    cols += [c for c in ("ei_ratio", "rate_mean") if c in b]
    return b[cols].reset_index(drop=True)


def optimizer_fits(res) -> pd.DataFrame:
    """The best fit of each subject × optimizer (over seeds): as :func:`fitted_parameters`."""
    df = _df(res)
    if df.empty:
        return pd.DataFrame()
    b = R.best(df, by=["subject", "optimizer"])
    cols = ["subject", "optimizer", "seed", "run_id", "eval_index", "loss"] + R.param_columns(df)
    cols += [c for c in ("ei_ratio", "rate_mean") if c in b]
    return b[cols].reset_index(drop=True)


def recovery(res) -> pd.DataFrame:
    """Parameter recovery on synthetic subjects (``truth.json``), one row per run on one: ``run_id,
    subject, optimizer, seed``, then per parameter ``<p>`` (the run's best candidate),
    ``<p>_true`` and ``<p>_err`` ((fitted − true) / search range), and ``recovery_err``
    (:func:`raybrain.results.recovery_error`). Empty without truth."""
    r = as_results(res)
    truth = r.truth or {}
    params = truth.get("params") or {}
    runs = R.summary(r.evaluations) if not r.evaluations.empty else pd.DataFrame()
    if not params or runs.empty:
        return pd.DataFrame()
    runs = runs[runs["subject"].isin(list(params)) & runs["best_loss"].notna()].copy()
    if runs.empty:
        return pd.DataFrame()
    bounds = truth.get("bounds", {})
    names = [n for n in R.param_columns(r.evaluations) if any(n in p for p in params.values())]
    out = runs[["run_id", "subject", "optimizer", "seed"]].copy()
    for n in names:
        true = runs["subject"].map(lambda s: params.get(s, {}).get(n, np.nan)).astype(float)
        out[n] = runs[n].astype(float)
        out[f"{n}_true"] = true
        width = (bounds[n][1] - bounds[n][0]) if n in bounds else np.nan
        out[f"{n}_err"] = (out[n] - true) / width
    out["recovery_err"] = R.recovery_error(runs, truth).to_numpy()
    out.attrs["params"] = names
    return out.sort_values(["subject", "optimizer", "seed"], kind="stable").reset_index(drop=True)


# -------------------------------------------------------------------------------- landscapes
def is_grid(points: np.ndarray) -> bool:
    """True when the 2-D ``points`` (n, 2) are a full Cartesian grid with >= 2 values per axis."""
    pts = np.unique(np.round(np.asarray(points, float), 12), axis=0)
    ux, uy = np.unique(pts[:, 0]), np.unique(pts[:, 1])
    return len(ux) >= 2 and len(uy) >= 2 and len(pts) == len(ux) * len(uy)


def landscape_map(res, subject: str, params: tuple[str, str] | None = None, bounds: Mapping[str, Any] | None = None,
                  resolution: int = 60) -> dict:
    """A 2-D loss map of ``subject`` over ``params`` (default the first two parameters), from its
    top-fidelity training evaluations. ``method``:

    - ``"grid"``: there are exactly two parameters and some optimizer sampled a full grid of
      them: the mean loss at each grid point (edges half-way between points);
    - ``"interpolated"``: two parameters otherwise: every evaluation's loss (the lowest where a
      point repeats) interpolated linearly (Delaunay, in units of the search range);
    - ``"binned"``: more than two parameters (or too few distinct points to interpolate): the
      lowest loss of the evaluations in each bin, the others parameters free (a profile).

    Returns ``{"x", "y"`` (cell edges, or centres for interpolated), ``"z"`` (ny, nx),
    ``"method", "params", "samples"`` (the rows drawn on top: optimizer and both parameters)."""
    from scipy import interpolate, stats

    r = as_results(res)
    df = top_fidelity(r.evaluations)
    allp = R.param_columns(r.evaluations)
    if params is None:
        if len(allp) < 2:
            raise NothingToShow(f"one parameter ({', '.join(allp) or 'none'}): no 2-D landscape")
        params = (allp[0], allp[1])
    p1, p2 = params
    df = df[df["subject"] == subject]
    df = df[np.isfinite(df[p1].astype(float)) & np.isfinite(df[p2].astype(float))]
    if df.empty:
        raise NothingToShow(f"{subject}: no finite-loss evaluations at the top fidelity")
    xy = df[[p1, p2]].to_numpy(float)
    loss = df["loss"].to_numpy(float)
    lim = {}
    for p, v in ((p1, xy[:, 0]), (p2, xy[:, 1])):
        b = (bounds or {}).get(p)
        lo, hi = (float(b[0]), float(b[1])) if b is not None else (float(v.min()), float(v.max()))
        if not hi > lo:
            lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
        lim[p] = (lo, hi)
    samples = df[["optimizer", p1, p2, "loss"]].reset_index(drop=True)
    out = {"params": (p1, p2), "samples": samples, "limits": lim}
    if len(allp) == 2:
        for _, g in df.groupby("optimizer", sort=False):
            pts = g[[p1, p2]].to_numpy(float)
            if len(pts) >= 4 and is_grid(pts):
                gm = g.assign(_x=np.round(pts[:, 0], 12), _y=np.round(pts[:, 1], 12))
                gm = gm.groupby(["_y", "_x"])["loss"].mean()
                ux, uy = np.unique(gm.index.get_level_values("_x")), np.unique(gm.index.get_level_values("_y"))
                z = gm.unstack("_x").reindex(index=uy, columns=ux).to_numpy(float)

                def edges(u):
                    mid = (u[1:] + u[:-1]) / 2
                    return np.concatenate([[u[0] - (mid[0] - u[0])], mid, [u[-1] + (u[-1] - mid[-1])]])

                return {**out, "x": edges(ux), "y": edges(uy), "z": z, "method": "grid",
                        "grid_optimizer": str(g["optimizer"].iloc[0])}
        u = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "l": loss}).groupby(["x", "y"])["l"].min().reset_index()
        if len(u) >= 4:
            sx = lim[p1][1] - lim[p1][0]
            sy = lim[p2][1] - lim[p2][0]
            gx = np.linspace(*lim[p1], resolution)
            gy = np.linspace(*lim[p2], resolution)
            X, Y = np.meshgrid(gx, gy)
            try:
                z = interpolate.griddata(np.c_[u["x"] / sx, u["y"] / sy], u["l"].to_numpy(),
                                         (X / sx, Y / sy), method="linear")
            except Exception:  # collinear points (scipy's QhullError): bin instead
                z = None
            if z is not None and np.isfinite(z).any():
                return {**out, "x": gx, "y": gy, "z": z, "method": "interpolated"}
    n_bins = int(np.clip(round(math.sqrt(len(df) / 2)), 4, 30))
    st = stats.binned_statistic_2d(xy[:, 0], xy[:, 1], loss, statistic="min", bins=n_bins,
                                   range=[lim[p1], lim[p2]])
    return {**out, "x": st.x_edge, "y": st.y_edge, "z": st.statistic.T, "method": "binned"}
