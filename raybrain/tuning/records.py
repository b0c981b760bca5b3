"""The files an experiment writes beside its records before any run starts: ``schema.json``
(:func:`results_schema`), ``truth.json`` and ``covariates.tsv``."""
from __future__ import annotations

from pathlib import Path


def _write_covariates(cfg, root: Path) -> None:
    """``covariates.tsv``: the cohort's covariates, one row per subject (``subject`` first; BIDS
    ``n/a`` for missing values), which :func:`raybrain.results.load` joins onto every record and
    run row by subject."""
    df = cfg.covariates()
    if df is None:
        return
    from ..results import _atomic_write

    text = df.to_csv(sep="\t", index=False, na_rep="n/a")
    f = root / "covariates.tsv"
    if not (f.is_file() and f.read_text() == text):
        _atomic_write(f, lambda p: p.write_text(text))


def _write_truth(cfg, root: Path) -> None:
    """``truth.json``: the known parameters of synthetic targets and the search bounds, which
    :func:`raybrain.results.load` turns into parameter-recovery errors."""
    truths = cfg.truths()
    if not truths:
        return
    import json

    par = cfg.build_parametrisation(next(iter(truths)))
    bounds = {n: [float(lo), float(hi)] for n, (lo, hi) in zip(par.names, par.bounds)}
    (root / "truth.json").write_text(json.dumps({"params": truths, "bounds": bounds}, indent=1))


def results_schema(cfg):
    """The :class:`raybrain.results.Schema` of every results file of ``cfg``: the parametrisation's
    names (a regional one's over every fitted and held-out target, whose region counts may
    differ), the loss's components (a composite's prefixed by part, with each part's total, as
    :class:`raybrain.losses.CompositeLoss` returns them) and, for a spectral fit, the spectral
    features of the simulated signal (:data:`raybrain.spectral.FEATURE_COLUMNS`). The noise and
    profile columns (``loss_se``, ``profile_param``, ``profile_step``) are known extras, in every
    file (:data:`raybrain.results.KNOWN_EXTRAS`)."""
    from ..objective import build_loss
    from ..results import Schema
    from ..losses import CompositeLoss
    from ..spectral import FEATURE_COLUMNS

    if cfg.parametrisation.kind == "regional":
        targets = dict.fromkeys(t for s in cfg.targets() for t in
                                [s, *cfg.holdout_targets("validation", s), *cfg.holdout_targets("test", s)])
        params = [n for t in targets for n in cfg.build_parametrisation(t).names]
    else:  # names that do not depend on the subject
        params = list(cfg.parametrisation.build(cfg.build_model()).names)
    loss = build_loss(cfg.loss)
    if isinstance(loss, CompositeLoss):
        comps = [c for k, (lo, _) in loss.parts.items() for c in (f"{k}.total", *(f"{k}.{x}" for x in lo.components))]
    else:
        comps = list(loss.components)
    return Schema(params, comps, list(FEATURE_COLUMNS) if cfg.spectral else [])


def _write_schema(cfg, root: Path) -> None:
    """``schema.json``: the columns every results file of the experiment has (every writer of
    ``root`` reads it), so that any parquet reader sees one schema."""
    from ..results import ResultsWriter

    ResultsWriter(root, cfg.name, schema=results_schema(cfg))
