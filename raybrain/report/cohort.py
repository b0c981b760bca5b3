"""Group analysis of a cohort: from per-subject fits to group effects with honest uncertainty
(tables and figures; no Ray, nothing simulated unless asked).

**Covariates.** A cohort experiment's results folder holds ``covariates.tsv`` (tab-separated,
BIDS-style): first column ``subject`` (the subject name as in the results' ``subject`` column;
a BIDS ``participant_id`` column is accepted as well), then one column per covariate, ``n/a``
(or an empty cell) for a missing value (:func:`read_covariates`). A column whose every present
value is a number is numeric; any other is categorical.

**One fit per subject** (:func:`fits_table`). A subject fitted by several runs (optimizers ×
seeds) is represented by its *validated winner*: the run with the lowest validated loss
(``val_loss`` of :func:`raybrain.results.holdout`: the winner re-simulated with fresh noise),
or, where none of the subject's runs has a validation phase, the lowest best training loss at the
top fidelity (which is optimistic: the best of many noisy evaluations). The parameters are those
of that run's validated winner (its ``winner_eval``), else of its best training evaluation.

**Associations** (:func:`associate`). For each quantity y (a fitted parameter, E/I ratio, mean
rate, ...) and covariate x, the ordinary least-squares model

    y = b0 + b·x (+ c·z for the nuisance covariates z of ``adjust``) + e

with b's standard error se = sqrt(RSS/(n − p) · [(XᵀX)⁻¹]_xx), the 95 % confidence interval
b ± t_{0.975, n−p}·se, t = b/se and the two-sided parametric p (Student's t, n − p degrees of
freedom; p the number of model columns). A numeric covariate's b is per unit; a categorical one
with two levels is coded 0 (reference: the first level in alphabetical order) / 1, so b is the
difference of the group means (adjusted for z, given ``adjust``); a categorical one with more
than two levels is coded with k − 1 indicator columns and tested as a whole by the partial
F-test F = ((RSS_reduced − RSS_full)/(k − 1)) / (RSS_full/(n − p)) (no slope, no r). ``r`` is
Pearson's r of y and x (with ``adjust``: the partial correlation given z), r = t/sqrt(t² + n − p).

The permutation p-value does not assume normal residuals: Freedman & Lane (1983, J. Bus. Econ.
Stat. 1:292) — fit the reduced model y ~ 1 + z, permute its residuals, add them back to its
fitted values and refit the full model, n_perm times; p = (1 + #{|t*| ≥ |t|}) / (1 + n_perm)
(F* ≥ F for a many-level covariate; Phipson & Smyth 2010, Stat. Appl. Genet. Mol. Biol. 9:39).
Without nuisance covariates the reduced model is the mean and this is permuting y against x,
the same test as permuting the covariate. Finally the p-values of every tested pair are adjusted
for multiple comparisons (Holm 1979, family-wise; or Benjamini & Hochberg 1995, false discovery
rate): the adjusted values are those of the permutation p-values (of the parametric ones with
``n_perm=0``).

A fitted parameter that the identifiability profiles (:mod:`raybrain.report.noise`) call
*unidentified* for most subjects is flagged: its between-subject differences may be noise.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import results as R
from . import stats as S
from ..results import COVARIATES_FILE, _clean_covariates, read_covariates  # noqa: F401 - part of this API
from .stats import NothingToShow, fdr_bh  # noqa: F401 - fdr_bh is part of this module's API

CORRECTIONS = ("holm", "fdr_bh")
ALPHA = 0.05
N_PERM = 5000
#: record fields reported per subject next to the parameters (where the model has them)
RECORD_FIELDS = ("rate_mean", "ei_ratio")
#: columns of fits_table that are not quantities to associate
_META = ("subject", "optimizer", "seed", "run_id", "n_runs", "selected_by", "fit_eval", "best_loss", "val_loss",
         "val_se", "test_loss", "test_se", "resim_loss", "fc_corr", "fcd_ks")


# ---------------------------------------------------------------------------------- covariates
def _as_covariates(cov, root) -> pd.DataFrame | None:
    if cov is None:
        return read_covariates(root) if root is not None else None
    if isinstance(cov, (str, os.PathLike)):
        out = read_covariates(cov)
        if out is None:
            raise ValueError(f"{cov}: no covariates file ({COVARIATES_FILE})")
        return out
    if isinstance(cov, pd.DataFrame):
        if "subject" not in cov.columns and cov.index.name in ("subject", "participant_id"):
            cov = cov.reset_index()
        return _clean_covariates(cov, "covariates")
    raise TypeError(f"covariates must be a DataFrame or a path, got {type(cov).__name__}")


def covariate_kind(values) -> str:
    """``"numeric"``, ``"binary"`` (two levels, or a 0/1… numeric with two values is still
    ``"numeric"``: its slope per unit is the difference), ``"categorical"`` (more than two levels)
    or ``"constant"`` (one value or none) of a covariate's present values."""
    s = pd.Series(values).dropna()
    if s.nunique() < 2:
        return "constant"
    if pd.api.types.is_bool_dtype(s):
        return "binary"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    return "binary" if s.astype(str).nunique() == 2 else "categorical"


# ------------------------------------------------------------------------------------ fit table
def _params_of(res: R.Results, runs: pd.DataFrame) -> list[str]:
    ev = res.evaluations
    if not ev.empty and "dt" in ev.columns and "loss" in ev.columns:
        return R.param_columns(ev)
    cols = list(runs.columns)
    if "best_eval" not in cols:
        return []
    stop = {"val_loss", "val_se", "winner_eval", "test_loss", "test_se", "at_bound", "recovery_err"}
    out = []
    for c in cols[cols.index("best_eval") + 1:]:
        if c in stop:
            break
        out.append(c)
    return out


def _winners(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The validated winner of each group of ``by`` (module docstring)."""
    runs = runs.copy()
    val = runs["val_loss"].astype(float) if "val_loss" in runs else pd.Series(np.nan, index=runs.index)
    runs["_val"] = val
    runs["_best"] = runs["best_loss"].astype(float)
    has_val = runs.groupby(by)["_val"].transform(lambda v: np.isfinite(v).any())
    runs["selected_by"] = np.where(has_val, "val_loss", "best_loss")
    runs["_key"] = np.where(has_val, runs["_val"], runs["_best"])
    runs = runs[np.isfinite(runs["_key"].astype(float))]
    runs["n_runs"] = runs.groupby(by)["run_id"].transform("size")
    order = ["_key"] + [c for c in ("optimizer", "seed", "run_id") if c in runs]
    win = runs.sort_values(order, kind="stable").groupby(by, sort=True).head(1)
    return win.sort_values(by, kind="stable").drop(columns=["_val", "_best", "_key"]).reset_index(drop=True)


def fits_table(res_or_path, *, covariates=None, regional: bool = False, resimulate: bool = False,
               by_optimizer: bool = False, path=None, max_duration: float | None = None, seed: int = 0,
               cfg=None) -> pd.DataFrame:
    """One row per subject (``by_optimizer``: per subject × optimizer): the subject's validated
    winner among its runs (optimizers × seeds): the run with the lowest ``val_loss``, or, when
    none of the subject's runs was validated, the lowest ``best_loss`` (``selected_by`` says
    which; ``n_runs`` how many runs competed). Columns: ``subject, optimizer, seed, run_id,
    n_runs, selected_by, fit_eval`` (the training evaluation whose parameters are reported: the
    run's validated winner ``winner_eval``, else its best evaluation), the fitted parameters,
    ``best_loss, val_loss, val_se`` (and ``test_loss, test_se`` where there is a test phase),
    ``rate_mean`` / ``ei_ratio`` where the model reports them (the winner's validation
    re-simulations averaged, fresh noise; else its training record), ``status[<param>]`` (the
    identifiability status of the run's profile of each parameter, :func:`raybrain.report.noise.identifiability`)
    where the results hold profiles, then the covariates joined by subject (``covariates``: a
    DataFrame with a ``subject`` column or a covariates file; default ``<root>/covariates.tsv``
    when ``res_or_path`` is the results folder, else the results' ``covariates`` attribute).

    ``resimulate``: each winner simulated again (:func:`raybrain.report.brains.resimulate`, needs
    ``experiment.json``: ``res_or_path`` or ``path`` must be the results folder) adds
    ``resim_loss, fc_corr, fcd_ks``. ``regional`` (with ``resimulate``) adds, per region, the
    E/I ratio as columns ``ei[<label>]`` (wide format, one row per subject still; ``label`` the
    region's name, its index where the subject has none), the per-region rate as ``rate[<label>]``
    where the re-simulation keeps it, and the per-region model parameters of a ``maps``
    parametrisation as ``<name>[<label>]``.

    ``attrs``: ``params`` (the parameter columns), ``covariates`` (the covariate columns),
    ``quantities`` (default quantities of :func:`associate`), ``regional`` (regional columns),
    ``notes`` (sentences: subjects without covariates, ...)."""
    root = Path(res_or_path) if isinstance(res_or_path, (str, os.PathLike)) else (Path(path) if path else None)
    res = S.as_results(res_or_path)
    runs = res.runs if isinstance(res.runs, pd.DataFrame) and {"subject", "best_loss"} <= set(res.runs.columns) \
        else R.summary(res.evaluations)
    runs = runs[runs["subject"].notna() & runs["run_id"].notna()] if not runs.empty else runs
    if runs.empty:
        raise NothingToShow("no run in these results: no per-subject fit")
    params = _params_of(res, runs)
    by = ["subject", "optimizer"] if by_optimizer else ["subject"]
    win = _winners(runs, by)
    if win.empty:
        raise NothingToShow("no run has a finite loss: no per-subject fit")
    ev = res.evaluations
    fit_eval = win["best_eval"].astype(float).copy() if "best_eval" in win else pd.Series(np.nan, index=win.index)
    if "winner_eval" in win:
        fit_eval = win["winner_eval"].astype(float).where(win["winner_eval"].notna(), fit_eval)
    win["fit_eval"] = fit_eval.astype("Int64")
    out = win[[c for c in ("subject", "optimizer", "seed", "run_id", "n_runs", "selected_by", "fit_eval")
               if c in win]].copy()
    for p in params:
        out[p] = win[p].astype(float) if p in win else np.nan
    record = {c: pd.Series(np.nan, index=out.index) for c in RECORD_FIELDS}
    if not ev.empty and "eval_index" in ev and "phase" in ev:
        train = ev[ev["phase"] == "train"]
        key = pd.MultiIndex.from_arrays([out["run_id"], out["fit_eval"].astype(float)])
        rows = train.assign(_e=train["eval_index"].astype(float)).drop_duplicates(["run_id", "_e"]) \
            .set_index(["run_id", "_e"])
        hit = rows.reindex(key)
        for p in params:
            if p in hit:
                v = hit[p].astype(float).to_numpy()
                out[p] = np.where(np.isfinite(v), v, out[p].to_numpy(float))
        for c in RECORD_FIELDS:
            if c in hit:
                record[c] = pd.Series(hit[c].astype(float).to_numpy(), index=out.index)
        val = ev[ev["phase"] == "validation"] if "source_eval" in ev else ev.iloc[:0]
        if not val.empty:
            for c in RECORD_FIELDS:
                if c not in val:
                    continue
                m = val.assign(_e=val["source_eval"].astype(float), _v=val[c].astype(float)) \
                    .groupby(["run_id", "_e"])["_v"].mean()
                v = m.reindex(key).to_numpy(float)
                record[c] = pd.Series(np.where(np.isfinite(v), v, record[c].to_numpy(float)), index=out.index)
    for c in ("best_loss", "val_loss", "val_se", "test_loss", "test_se"):
        if c in win and (c in ("best_loss", "val_loss", "val_se") or win[c].notna().any()):
            out[c] = win[c].astype(float)
    for c in RECORD_FIELDS:
        if np.isfinite(record[c].astype(float)).any():
            out[c] = record[c].astype(float)
    # identifiability statuses of the winners' profiles
    if not ev.empty and "phase" in ev and (ev["phase"] == "profile").any():
        from . import noise as NZ

        ident = NZ.identifiability(res)
        if not ident.empty:
            st = ident.pivot_table(index="run_id", columns="param", values="status", aggfunc="first")
            for p in params:
                if p in st.columns:
                    out[f"status[{p}]"] = out["run_id"].map(st[p])
    regional_cols: list[str] = []
    notes: list[str] = []
    if regional and not resimulate:
        raise ValueError("fits_table: regional=True needs resimulate=True (the per-region E/I comes from "
                         "simulating each subject's fit again)")
    if resimulate:
        out, regional_cols = _resimulated(out, res, root, regional=regional, max_duration=max_duration, seed=seed,
                                          cfg=cfg, by_optimizer=by_optimizer)
    cov = _as_covariates(covariates, root)
    if cov is None:
        cov = getattr(res, "covariates", None)
        cov = _clean_covariates(cov, "results covariates") if isinstance(cov, pd.DataFrame) else None
    cov_cols: list[str] = []
    if cov is not None:
        cov_cols = [c for c in cov.columns if c != "subject"]
        clash = [c for c in cov_cols if c in out.columns]
        if clash:
            raise ValueError(f"covariates: column {clash[0]!r} is also a column of the fits table; rename it")
        missing = sorted(set(out["subject"]) - set(cov["subject"]))
        if missing:
            notes.append(f"{len(missing)} of {out['subject'].nunique()} fitted subjects have no row in the "
                         f"covariates ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}).")
        out = out.merge(cov, on="subject", how="left")
    out = out.reset_index(drop=True)
    quantities = list(params) + [c for c in RECORD_FIELDS if c in out]
    out.attrs.update(params=list(params), covariates=cov_cols, quantities=quantities, regional=regional_cols,
                     notes=notes, by=by)
    return out


def _resimulated(out: pd.DataFrame, res: R.Results, root, *, regional: bool, max_duration, seed: int, cfg,
                 by_optimizer: bool) -> tuple[pd.DataFrame, list[str]]:
    """``out`` plus the re-simulation of each row's fit (see :func:`fits_table`)."""
    from .brains import resimulate as resimulate_fits  # (the package's name "brains" is the figure)

    if root is None:
        raise ValueError("fits_table: resimulate=True needs the results folder (pass the path, or path=...)")
    ev = res.evaluations
    if ev.empty:
        raise NothingToShow("no evaluations: nothing to simulate again")
    train = ev[ev["phase"] == "train"] if "phase" in ev else ev
    kw = {"seed": seed}
    if max_duration is not None:
        kw["max_duration"] = max_duration
    brains: dict[tuple, Any] = {}
    groups = [out] if not by_optimizer else [g for _, g in out.groupby("optimizer", sort=True)]
    for g in groups:
        # exactly the rows to simulate: each subject's fitted evaluation, so that brains.resimulate's
        # "best of the subject" is this table's winner
        sel = pd.MultiIndex.from_arrays([g["run_id"], g["fit_eval"].astype(float)])
        key = pd.MultiIndex.from_arrays([train["run_id"], train["eval_index"].astype(float)])
        rows = train[key.isin(sel)]
        sub = R.Results(rows, R.summary(rows) if not rows.empty else res.runs.iloc[:0], res.truth, res.bounds,
                        res.burn_in)
        for b in resimulate_fits(root, sub, subjects=list(g["subject"]), max_subjects=len(g), cfg=cfg, **kw):
            brains[(b.subject, b.optimizer) if by_optimizer else (b.subject,)] = b
    out = out.copy()
    keys = [tuple(r) for r in out[["subject", "optimizer"] if by_optimizer else ["subject"]].itertuples(index=False)]
    got = [brains.get(k) for k in keys]
    out["resim_loss"] = [b.loss if b is not None else np.nan for b in got]
    out["fc_corr"] = [b.fc_corr if b is not None else np.nan for b in got]
    out["fcd_ks"] = [b.fcd_ks if b is not None else np.nan for b in got]
    cols: dict[str, list] = {}
    if regional:
        for i, b in enumerate(got):
            if b is None:
                continue
            maps = {"ei": getattr(b, "ei", None), "rate": getattr(b, "rates", None), **(b.regional or {})}
            for name, v in maps.items():
                if v is None:
                    continue
                v = np.asarray(v, float).ravel()
                labels = b.labels if b.labels is not None and len(b.labels) == len(v) else range(len(v))
                for lab, x in zip(labels, v):
                    cols.setdefault(f"{name}[{lab}]", [np.nan] * len(out))[i] = float(x)
    if cols:
        out = pd.concat([out, pd.DataFrame(cols, index=out.index)], axis=1)
    return out, list(cols)


# ---------------------------------------------------------------------------------- statistics
def adjust_p(p, correction: str = "holm") -> np.ndarray:
    """``p`` adjusted for multiple comparisons: ``"holm"`` (Holm 1979, family-wise error) or
    ``"fdr_bh"`` (Benjamini & Hochberg 1995, false discovery rate)."""
    if correction == "holm":
        return S.holm(p)
    if correction == "fdr_bh":
        return S.fdr_bh(p)
    raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")


def _encode(s: pd.Series, kind: str) -> tuple[np.ndarray, list[str], str]:
    """Model columns of a covariate: (n × q matrix, levels, contrast text)."""
    if kind == "numeric":
        return s.astype(float).to_numpy()[:, None], [], "per unit"
    levels = sorted(s.astype(str).unique())
    x = s.astype(str).to_numpy()
    cols = np.column_stack([(x == lev).astype(float) for lev in levels[1:]])
    if kind == "binary":
        return cols, levels, f"{levels[1]} − {levels[0]}"
    return cols, levels, f"{len(levels)} levels vs {levels[0]}"


def _stat(Y: np.ndarray, full: np.ndarray, Z: np.ndarray, q: int):
    """The test statistic of the last ``q`` columns of ``full`` for every column of ``Y`` (n × m):
    (coefficient, se, t) for q = 1, (nan, nan, F) otherwise."""
    n, p = full.shape
    df = n - p
    pinv = np.linalg.pinv(full)
    B = pinv @ Y
    rss = np.sum((Y - full @ B) ** 2, axis=0)
    if q == 1:
        xtx_inv = pinv @ pinv.T  # (XᵀX)⁻¹ for full column rank
        se = np.sqrt(rss / df * xtx_inv[-1, -1])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = B[-1] / se
        return B[-1], se, t
    Br = np.linalg.pinv(Z) @ Y
    rss_r = np.sum((Y - Z @ Br) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        F = ((rss_r - rss) / q) / (rss / df)
    nan = np.full(Y.shape[1], np.nan)
    return nan, nan, F


def ols_test(y, x, z=None, *, n_perm: int = N_PERM, seed: int = 0, level: float = 0.95) -> dict:
    """One association (module docstring): ``y`` (n,) on the model columns ``x`` (n,) or (n, q)
    adjusted for the nuisance columns ``z`` (n, k) or None (an intercept is always added). Returns
    ``slope, se, ci_low, ci_high, r, statistic`` (t, or F for q > 1), ``df, p_value`` (parametric)
    and ``p_perm`` (Freedman–Lane, NaN for ``n_perm`` 0)."""
    from scipy import stats

    y = np.asarray(y, float)
    x = np.asarray(x, float)
    x = x[:, None] if x.ndim == 1 else x
    n, q = x.shape
    Z = np.ones((n, 1)) if z is None or np.size(z) == 0 else np.column_stack([np.ones(n), np.asarray(z, float)])
    full = np.column_stack([Z, x])
    p = full.shape[1]
    df = n - p
    if df < 1:
        raise ValueError(f"too few subjects ({n}) for a model with {p} columns")
    if np.linalg.matrix_rank(full) < p:
        raise ValueError("the covariate is constant or collinear with the nuisance covariates")
    b, se, t = (float(v[0]) for v in _stat(y[:, None], full, Z, q))
    if q == 1:
        qt = float(stats.t.ppf(0.5 + level / 2, df))
        pval = float(2 * stats.t.sf(abs(t), df)) if np.isfinite(t) else (0.0 if se == 0 and b != 0 else np.nan)
        r = t / math.sqrt(t * t + df) if np.isfinite(t) else (math.copysign(1.0, t) if not np.isnan(t) else np.nan)
        out = {"slope": b, "se": se, "ci_low": b - qt * se, "ci_high": b + qt * se, "r": r, "statistic": t}
    else:
        pval = float(stats.f.sf(t, q, df)) if np.isfinite(t) else np.nan
        out = {"slope": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "r": np.nan, "statistic": t}
    out.update(df=df, p_value=pval, p_perm=np.nan, n_perm=int(n_perm))
    if n_perm and n_perm > 0 and np.isfinite(t):
        rng = np.random.default_rng(seed)
        gz = np.linalg.pinv(Z) @ y
        fit_r = Z @ gz
        e_r = y - fit_r
        obs = abs(t)
        tol = 1e-10 * max(obs, 1.0)
        count = 0
        chunk = max(1, min(int(n_perm), 2_000_000 // max(n, 1)))
        done = 0
        while done < n_perm:
            m = min(chunk, n_perm - done)
            idx = np.argsort(rng.random((m, n)), axis=1)
            Ys = fit_r[:, None] + e_r[idx].T
            s = _stat(Ys, full, Z, q)[2]
            count += int(np.sum(np.abs(s) >= obs - tol))
            done += m
        out["p_perm"] = (1 + count) / (1 + int(n_perm))
    return out


def _default_quantities(table: pd.DataFrame, covs: Sequence[str]) -> list[str]:
    q = table.attrs.get("quantities")
    if q:
        return [c for c in q if c in table]
    return [c for c in table.columns if c not in _META and c not in covs and not c.startswith("status[")
            and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]


def associate(table: pd.DataFrame, quantities=None, covariates=None, *, adjust=(), n_perm: int = N_PERM,
              seed: int = 0, correction: str = "holm", alpha: float = ALPHA) -> pd.DataFrame:
    """Every (quantity, covariate) pair of ``table`` (:func:`fits_table`), one row each, by the
    model of the module docstring: ``quantity, covariate, kind`` (numeric / binary / categorical),
    ``contrast`` ("per unit", "M − F": the second level minus the reference, the first in
    alphabetical order; "k levels vs <ref>": partial F-test), ``adjusted_for`` (the nuisance
    covariates ``adjust``), ``n`` (subjects with every value present: rows with a missing value
    are dropped per pair), ``slope, se, ci_low, ci_high`` (95 % t interval), ``r`` (Pearson's r;
    partial r given ``adjust``), ``test`` ("t" or "F"), ``statistic, df, p_value`` (parametric),
    ``p_perm`` (Freedman–Lane permutation p over ``n_perm`` permutations, seeded by ``seed``),
    ``p_adj`` (the permutation p-values — the parametric ones when ``n_perm`` is 0 — adjusted over
    every tested pair by ``correction``: ``"holm"``, Holm–Bonferroni, or ``"fdr_bh"``,
    Benjamini–Hochberg), ``correction``, ``significant`` (p_adj < ``alpha``), ``unidentified``
    (the quantity is a parameter whose identifiability profile is "unidentified" in more than
    half of the subjects with a profile: its differences between subjects may be noise) and
    ``note`` (why a pair was not tested, or the unidentified count).

    Defaults: ``quantities``, the fitted parameters plus ``ei_ratio`` / ``rate_mean`` where
    present (``table.attrs["quantities"]``); ``covariates``, those of ``table.attrs["covariates"]``
    that are numeric or binary (a categorical covariate with more levels is tested by F only when
    named; a constant one is listed with a note). ``attrs``: ``correction``, ``alpha``, ``n_perm``,
    ``n_tests`` and ``sentence`` (the correction and n, in words)."""
    cols = ["quantity", "covariate", "kind", "contrast", "adjusted_for", "n", "slope", "se", "ci_low", "ci_high", "r",
            "test", "statistic", "df", "p_value", "p_perm", "n_perm", "p_adj", "correction", "significant",
            "unidentified", "note"]
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if not (isinstance(n_perm, (int, np.integer)) and not isinstance(n_perm, bool) and n_perm >= 0):
        raise ValueError(f"n_perm must be an integer >= 0, got {n_perm!r}")
    if not (0 < alpha < 1):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    adjust = [adjust] if isinstance(adjust, str) else list(adjust or ())
    known = table.attrs.get("covariates") or []
    if covariates is None:
        covariates = [c for c in known if c in table and c not in adjust and covariate_kind(table[c]) != "categorical"]
    else:
        covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    if quantities is None:
        quantities = _default_quantities(table, list(known) + covariates + adjust)
    else:
        quantities = [quantities] if isinstance(quantities, str) else list(quantities)
    for c in list(quantities) + covariates + adjust:
        if c not in table.columns:
            raise ValueError(f"associate: no column {c!r} in the table (columns: {', '.join(map(str, table.columns))})")
    rows = []
    for q in quantities:
        flag, flag_note = False, ""
        if f"status[{q}]" in table:
            st = table[f"status[{q}]"].dropna()
            k = int((st == "unidentified").sum())
            if len(st) and 2 * k > len(st):
                flag, flag_note = True, f"unidentified in {k}/{len(st)} subjects' profiles"
        for c in covariates:
            row = {"quantity": q, "covariate": c, "adjusted_for": ", ".join(a for a in adjust if a != c),
                   "n_perm": int(n_perm), "correction": correction, "unidentified": flag}
            nuis = [a for a in adjust if a not in (c, q)]
            if c == q:
                rows.append({**row, "n": 0, "kind": "", "note": "the quantity itself"})
                continue
            d = table[[q, c] + nuis].copy()
            d[q] = pd.to_numeric(d[q], errors="coerce")
            d = d.dropna()
            d = d[np.isfinite(d[q].astype(float))]
            row["n"] = len(d)
            kind = covariate_kind(d[c])
            row["kind"] = kind
            note = ""
            if kind == "constant":
                note = "the covariate takes one value among these subjects"
            elif d[q].nunique() < 2:
                note = "the quantity is constant among these subjects"
            if not note:
                x, _, contrast = _encode(d[c], kind)
                row["contrast"] = contrast
                z = [(_encode(d[a], covariate_kind(d[a]))[0] if covariate_kind(d[a]) != "constant" else None)
                     for a in nuis]
                z = [m for m in z if m is not None]
                try:
                    r = ols_test(d[q].to_numpy(float), x, np.column_stack(z) if z else None, n_perm=int(n_perm),
                                 seed=seed)
                    row.update(r)
                    row["test"] = "t" if x.shape[1] == 1 else "F"
                except ValueError as e:
                    note = str(e)
            row["note"] = "; ".join(x for x in (note, flag_note) if x)
            rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    if not out.empty:
        p = out["p_perm"] if n_perm > 0 else out["p_value"]
        out["p_adj"] = adjust_p(p.astype(float).to_numpy(), correction)
        out["significant"] = out["p_adj"] < alpha
        out["n"] = out["n"].astype(int)
        out["unidentified"] = out["unidentified"].astype(bool)
    n_tests = int(np.isfinite(out["p_adj"].astype(float)).sum()) if not out.empty else 0
    name = {"holm": "Holm–Bonferroni (family-wise error)", "fdr_bh": "Benjamini–Hochberg (false discovery rate)"}
    ns = sorted(set(out.loc[out["p_adj"].notna(), "n"].astype(int))) if n_tests else []
    n_said = (f"n = {ns[0]} subjects" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} subjects (missing values dropped "
              "per pair)") if ns else "no subject"
    base = f"{'Freedman–Lane permutation' if n_perm > 0 else 'parametric t/F'} p-values"
    sentence = (f"{n_tests} quantity × covariate test{'s' if n_tests != 1 else ''} ({n_said}"
                + (f", {n_perm} permutations" if n_perm > 0 else "")
                + (f", adjusted for {', '.join(adjust)}" if adjust else "")
                + f"); {base} corrected over all {n_tests} by {name[correction]}, α = {alpha:g}.")
    out.attrs.update(correction=correction, alpha=alpha, n_perm=int(n_perm), n_tests=n_tests, sentence=sentence,
                     adjust=list(adjust))
    return out


# -------------------------------------------------------------------------------------- figures
def _fig(n_panels: int, ncols: int = 3, w: float = 4.3, h: float = 3.3):
    from .figures import _figure

    return _figure(n_panels, ncols=ncols, w=w, h=h)


def plot_distributions(table: pd.DataFrame, quantities=None, by: str | None = None, max_panels: int = 12):
    """One panel per quantity: one jittered point per subject (a box over at least
    :data:`raybrain.report.figures.MIN_BOX` subjects), split into groups by the categorical
    covariate ``by`` (one colour per level, reference first; subjects without a value: "n/a")."""
    from matplotlib.lines import Line2D

    from .figures import MIN_BOX, _strip, colours

    if quantities is None:
        quantities = _default_quantities(table, table.attrs.get("covariates") or [])
    quantities = [quantities] if isinstance(quantities, str) else list(quantities)
    quantities = [q for q in quantities if q in table and pd.to_numeric(table[q], errors="coerce").notna().any()]
    if not quantities:
        raise NothingToShow("no quantity with a value to show")
    if by is not None and by not in table:
        raise ValueError(f"plot_distributions: no column {by!r} in the table")
    shown = quantities[:max_panels]
    if by is not None:
        g = table[by].astype(object).where(table[by].notna(), "n/a").astype(str)
        levels = sorted(set(g) - {"n/a"}) + (["n/a"] if (g == "n/a").any() else [])
    else:
        g = pd.Series("all", index=table.index)
        levels = ["all"]
    col = colours(levels) if by is not None else {"all": "C0"}
    fig, axes = _fig(len(shown), ncols=min(3, len(shown)), w=max(3.6, 1.1 * len(levels) + 2))
    for ax, q in zip(axes, shown):
        v = pd.to_numeric(table[q], errors="coerce").astype(float)
        groups = [v[g == lev].to_numpy() for lev in levels]
        _strip(ax, groups, point_colours=[[col[lev]] * len(x) for lev, x in zip(levels, groups)])
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([f"{lev}\n(n={int(np.isfinite(x).sum())})" for lev, x in zip(levels, groups)],
                           fontsize="small")
        ax.set_ylabel(q)
        ax.set_title(q, fontsize="medium")
        ax.grid(alpha=0.3, axis="y")
    handles = [Line2D([], [], marker="o", ls="", color=col[lev]) for lev in levels]
    fig.legend(handles, [f"{by} = {lev}" if by else "one point per subject" for lev in levels],
               loc="outside lower center", ncol=min(len(levels), 6), frameon=False, fontsize="small")
    more = f" (first {max_panels} of {len(quantities)})" if len(quantities) > max_panels else ""
    fig.suptitle(f"Per-subject fits{' by ' + by if by else ''}: one point per subject; boxes where ≥ {MIN_BOX}"
                 f"{more}", fontsize="medium")
    return fig


def _row(result_row) -> dict:
    if result_row is None:
        return {}
    if isinstance(result_row, pd.DataFrame):
        if len(result_row) != 1:
            raise ValueError(f"result_row: expected one row of associate(), got {len(result_row)}")
        return result_row.iloc[0].to_dict()
    return dict(result_row)


def plot_association(table: pd.DataFrame, quantity: str, covariate: str, result_row=None, *,
                     truth: tuple[float, float] | None = None, n_perm: int = 2000, seed: int = 0,
                     level: float = 0.95):
    """The subjects' ``quantity`` against ``covariate``: one point per subject, the OLS line and
    its ``level`` confidence band (for the mean: ŷ ± t·s·sqrt(1/n + (x − x̄)²/Sxx)), and, in the
    title, the slope ± its confidence interval and the permutation p (raw and adjusted) of
    ``result_row`` (a row of :func:`associate`; computed here with ``n_perm`` permutations when
    None). A binary covariate is drawn at 0 (reference level) and 1; its line joins the group
    means. With nuisance covariates (the row's ``adjusted_for``) the y axis is the partial
    residual y − ĉ·z (the nuisance effects removed), whose OLS slope on x is the adjusted slope.
    ``truth=(intercept, slope)`` draws the true line (dashed). A many-level covariate is shown as
    one strip per level (no line)."""
    from scipy import stats

    from .figures import _strip

    for c in (quantity, covariate):
        if c not in table:
            raise ValueError(f"plot_association: no column {c!r} in the table")
    row = _row(result_row)
    adjust = [a for a in str(row.get("adjusted_for") or "").split(", ") if a]
    if not row:
        r = associate(table, [quantity], [covariate], n_perm=n_perm, seed=seed)
        row = r.iloc[0].to_dict()
        row["p_adj"] = np.nan  # one test: nothing to adjust over
    d = table[[quantity, covariate] + adjust].copy()
    d[quantity] = pd.to_numeric(d[quantity], errors="coerce")
    d = d.dropna()
    if len(d) < 3:
        raise NothingToShow(f"{quantity} vs {covariate}: fewer than 3 subjects with both values")
    kind = covariate_kind(d[covariate])
    if kind == "constant":
        raise NothingToShow(f"{covariate} takes one value among the subjects with {quantity}")
    y = d[quantity].to_numpy(float)
    x_enc, levels, _ = _encode(d[covariate], kind)
    ylabel = quantity
    if adjust:
        Z = [np.ones(len(d))] + [_encode(d[a], covariate_kind(d[a]))[0] for a in adjust
                                 if covariate_kind(d[a]) != "constant"]
        Z = np.column_stack(Z)
        full = np.column_stack([Z, x_enc])
        beta = np.linalg.lstsq(full, y, rcond=None)[0]
        y = y - Z[:, 1:] @ beta[1:Z.shape[1]]
        ylabel = f"{quantity} adjusted for {', '.join(adjust)} (partial residual)"
    fig, axes = _fig(1, ncols=1, w=5.6, h=4.4)
    ax = axes[0]
    if kind == "categorical":
        groups = [y[d[covariate].astype(str).to_numpy() == lev] for lev in levels]
        _strip(ax, groups)
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels(levels)
        title = f"{quantity} by {covariate}: F = {row.get('statistic', np.nan):.3g}"
    else:
        x = x_enc[:, 0]
        rng = np.random.default_rng(seed)
        xj = x + (rng.uniform(-0.08, 0.08, len(x)) if kind == "binary" else 0.0)
        sc = ax.scatter(xj, y, s=22, color="C0", alpha=0.85, edgecolors="none", zorder=3, label="subjects")
        sc.set_gid("points")
        n = len(x)
        fit = stats.linregress(x, y)
        xs = np.linspace(x.min(), x.max(), 100)
        yh = fit.intercept + fit.slope * xs
        resid = y - (fit.intercept + fit.slope * x)
        s = math.sqrt(float(np.sum(resid ** 2)) / (n - 2)) if n > 2 else float("nan")
        sxx = float(np.sum((x - x.mean()) ** 2))
        qt = float(stats.t.ppf(0.5 + level / 2, n - 2))
        half = qt * s * np.sqrt(1 / n + (xs - x.mean()) ** 2 / sxx)
        (line,) = ax.plot(xs, yh, color="C1", lw=2, label="OLS fit")
        line.set_gid("ols")
        band = ax.fill_between(xs, yh - half, yh + half, color="C1", alpha=0.2, lw=0,
                               label=f"{level:.0%} confidence band")
        band.set_gid("band")
        if truth is not None:
            t0, t1 = (float(v) for v in truth)
            (tl,) = ax.plot(xs, t0 + t1 * xs, color="k", ls="--", lw=1.2, label="truth")
            tl.set_gid("truth")
        if kind == "binary":
            ax.set_xticks([0, 1])
            ax.set_xticklabels([f"{levels[0]} (ref.)", levels[1]])
        ax.legend(loc="best", fontsize="small", frameon=False)
        unit = "" if kind == "binary" else f" per unit of {covariate}"
        title = (f"slope {row.get('slope', np.nan):.3g} [{row.get('ci_low', np.nan):.3g}, "
                 f"{row.get('ci_high', np.nan):.3g}]{unit}, r = {row.get('r', np.nan):.2f}")
    p_perm, p_adj = row.get("p_perm", np.nan), row.get("p_adj", np.nan)
    ps = []
    if p_perm is not None and np.isfinite(float(p_perm)):
        n_p = int(row.get("n_perm") or 0)
        floor = n_p > 0 and float(p_perm) <= 1.0 / (n_p + 1) * (1 + 1e-9)
        ps.append(f"permutation p = {float(p_perm):.3g}" + (f" (the floor for {n_p} permutations)" if floor else ""))
    elif row.get("p_value") is not None and np.isfinite(float(row.get("p_value"))):
        ps.append(f"p = {float(row['p_value']):.3g}")
    if p_adj is not None and np.isfinite(float(p_adj)):
        ps.append(f"{row.get('correction', 'adjusted')} p = {float(p_adj):.3g}")
    ax.set_title(title + "\n" + ", ".join(ps) + f" (n = {len(d)})", fontsize="small")
    ax.set_xlabel(covariate)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig


def plot_glass_brain(values, centres, labels=None, title: str = "per-region values", cmap: str = "viridis",
                     vmin: float | None = None, vmax: float | None = None):
    """Per-region ``values`` (N,) as markers at the region ``centres`` (N, 3 mm, MNI) on a glass
    brain (nilearn's ``plotting.plot_markers``): a :class:`matplotlib.figure.Figure`. Raises
    :class:`NothingToShow` when the centres are unknown (None) or nilearn is not installed
    (``pip install nilearn``), ValueError for values and centres that do not match."""
    if centres is None:
        raise NothingToShow("no region centres known (an atlas with x, y, z columns gives them): no glass brain")
    v = np.asarray(values, dtype=float).ravel()
    c = np.asarray(centres, dtype=float)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"centres: expected an (N, 3) array of coordinates in mm, got shape {c.shape}")
    if len(v) != len(c):
        raise ValueError(f"values: {len(v)} values for {len(c)} region centres")
    if labels is not None and len(labels) != len(v):
        raise ValueError(f"labels: {len(labels)} labels for {len(v)} values")
    if not np.isfinite(c).all():
        raise ValueError("centres: not every coordinate is finite")
    ok = np.isfinite(v)
    if not ok.any():
        raise NothingToShow("no finite value to show on the glass brain")
    try:
        from nilearn import plotting
    except ImportError:
        raise NothingToShow("the glass brain needs nilearn, which is not installed (pip install nilearn)") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(fig)
    display = plotting.plot_markers(v[ok], c[ok], figure=fig, title=title, node_cmap=cmap,
                                    node_vmin=vmin, node_vmax=vmax, display_mode="ortho", colorbar=True)
    fig.glass_brain_display = display
    return fig


# ---------------------------------------------------------------------------------- the report
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:60] or "x"


def regional_maps(brains, cfg) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """Group-mean regional maps for glass brains, from the report's re-simulated fits (``brains``,
    :class:`raybrain.report.brains.Brain`): for the largest set of subjects that share one
    parcellation with known region centres, the mean over subjects of each regional model
    parameter that varies over regions, and of the per-region E/I ratio when it varies (FIC holds it
    constant). Returns ``[(name, values (N,), centres (N, 3), n subjects)]``."""
    groups: dict[tuple, list] = {}
    for b in brains or ():
        try:
            subject = cfg.build_subject(b.subject)
        except Exception:  # noqa: BLE001 - a subject that cannot be rebuilt gets no map
            continue
        if getattr(subject, "centres", None) is None:
            continue
        groups.setdefault((subject.n_regions, subject.labels), []).append((b, subject.centres))
    if not groups:
        return []
    members = max(groups.values(), key=len)
    centres = members[0][1]
    out = []
    names = sorted({k for b, _ in members for k, v in b.regional.items() if np.ndim(v) == 1})
    for name in names:
        vals = [np.asarray(b.regional[name], float) for b, _ in members if name in b.regional]
        mean = np.mean(vals, axis=0)
        if np.ptp(mean) > 1e-9 * max(1.0, float(np.abs(mean).max())):
            out.append((name, mean, centres, len(vals)))
    eis = [np.asarray(b.ei, float) for b, _ in members if b.ei is not None]
    if eis:
        mean = np.mean(eis, axis=0)
        if np.ptp(mean) > 1e-6 * max(1.0, float(np.abs(mean).max())):
            out.append(("E/I ratio", mean, centres, len(eis)))
    return out


def section(res, sec, root, *, alpha: float = ALPHA, correction: str = "holm", n_perm: int = N_PERM,
            seed: int = 0, max_scatters: int = 6, brains=None, cfg=None) -> None:
    """Fill the report's ``sec`` (:class:`raybrain.report.html.Section`) with the cohort analysis of
    the results in ``root`` (which holds ``covariates.tsv``): the per-subject fits table, the
    association table with the sentence stating the correction and n, the distribution figure
    (split by the first binary or categorical covariate) and the scatter of every association with
    adjusted p < ``alpha`` (at most ``max_scatters``), else of the strongest one."""
    try:
        table = fits_table(res, covariates=Path(root) / COVARIATES_FILE)
    except NothingToShow as e:
        sec.note(str(e))
        return
    for n in table.attrs.get("notes", []):
        sec.note(n)
    covs = table.attrs.get("covariates", [])
    shown = [c for c in table.columns if not c.startswith("status[")]
    sec.table("cohort-fits", table[shown], "One row per subject: its validated winner among its runs (the run with "
              "the lowest validated loss, else the lowest best training loss: selected_by), the fitted parameters, "
              "losses and the covariates (covariates.tsv).")
    assoc = associate(table, alpha=alpha, correction=correction, n_perm=n_perm, seed=seed)
    tested = assoc[assoc["p_adj"].notna()] if not assoc.empty else assoc
    sec.table("cohort-associations", assoc, "Each fitted quantity regressed on each covariate (OLS): slope per unit "
              "(binary covariates: the second level minus the reference), its standard error and 95 % confidence "
              "interval, Pearson r, the parametric p, the Freedman–Lane permutation p and p_adj, corrected over "
              "every test; unidentified: the parameter's profile is flat within noise for most subjects.",
              empty="no quantity × covariate pair could be tested (no numeric or two-level covariate with values)")
    if not tested.empty:
        sec.text(assoc.attrs["sentence"])
        flagged = sorted(set(tested.loc[tested["unidentified"], "quantity"]))
        if flagged:
            sec.note(f"{', '.join(flagged)}: unidentified for most subjects (flat profiles): between-subject "
                     "differences of these values may be noise, and so may their associations.")
    split = next((c for c in covs if covariate_kind(table[c]) in ("binary", "categorical")), None)
    sec.figure("cohort-distributions", lambda: plot_distributions(table, by=split),
               "Each fitted quantity over subjects (one point per subject)"
               + (f", split by {split}." if split else "."))
    if brains and cfg is not None:
        maps = regional_maps(brains, cfg)
        for k, (name, values, centres, n) in enumerate(maps):
            try:
                fig = plot_glass_brain(values, centres, title=f"{name}: mean over {n} subjects")
            except NothingToShow as e:
                sec.note(f"no glass brain of {name}: {e}")
                break
            sec.figure(f"cohort-glass-{k}-{_safe(name)}", lambda fig=fig: fig,
                       f"{name} per region, the mean over the {n} re-simulated subjects that share the most common "
                       "parcellation, at the region centres (glass brain, nilearn).")
        if not maps:
            sec.note("No regional glass brain: no re-simulated subject has region centres with a regional value "
                     "that varies over regions (FIC holds the E/I ratio constant per region).")
    if tested.empty:
        return
    hits = tested[tested["significant"]]
    if hits.empty:
        pick = tested.sort_values(["p_adj", "p_value"], kind="stable").head(1)
        lead = (f"No association survives the correction (adjusted p ≥ {alpha:g}); the strongest one "
                f"(lowest adjusted p) is shown, for what it is worth.")
    else:
        pick = hits.sort_values(["p_adj", "p_value"], kind="stable").head(max_scatters)
        lead = (f"{len(hits)} association{'s' if len(hits) != 1 else ''} with adjusted p < {alpha:g}"
                + (f" (the first {max_scatters} shown)" if len(hits) > max_scatters else "") + ".")
    sec.text(lead)
    for k, r in enumerate(pick.to_dict("records")):
        sec.figure(f"cohort-assoc-{k}-{_safe(r['quantity'])}-{_safe(r['covariate'])}",
                   lambda r=r: plot_association(table, r["quantity"], r["covariate"], r),
                   f"{r['quantity']} against {r['covariate']} (n = {r['n']}): one point per subject, the OLS line and "
                   f"its 95 % confidence band; title: slope [95 % CI], permutation p and {r['correction']}-adjusted p.")
