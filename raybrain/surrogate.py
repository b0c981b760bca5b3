r"""A learned cost surrogate (DELSSOME; Zeng et al.): parameters → cost and plausibility.

DELSSOME replaces most of a brain-model fit's Euler simulations with a deep network trained on
earlier simulations: one head predicts the cost components, another classifies whether the
candidate's firing rates fall in the plausible range; CMA-ES then searches the surrogate, and only
its best candidates are simulated for real (validation and test keep the real simulator). This
module is the predictor; :mod:`raybrain.search.surrogate_cmaes` is the search.

The end-to-end speed-up of a surrogate run over a plain one at equal final test cost
(:func:`speedup`, on per-generation curves of each run's incumbent, :func:`incumbents`, with its
held-out test cost) is what ``benchmarks/surrogate.py`` reports.

::

    from raybrain import results
    from raybrain.surrogate import Surrogate
    df = results.load("results/pfic-cmaes").evaluations
    s = Surrogate.fit(df, seed=0)                 # training phase, top fidelity
    cost, p_plausible = s.predict(theta)          # theta (n, P) in parameter units
    s.score(other_df)    # {"cost_r", "cost_spearman", "class_accuracy", "n_train", "n_test", ...}
    s.save("results/pfic-cmaes/surrogate.npz"); Surrogate.load(...)

Model. An ensemble of ``ensemble`` multilayer perceptrons (``tanh`` hidden layers, L-BFGS,
L2 penalty ``alpha``; scikit-learn ``MLPRegressor``/``MLPClassifier`` for the fit only) on the
parameters scaled to :math:`[-1, 1]` by the bounds. ``tanh`` keeps the predicted cost smooth,
which CMA-ES exploits better than the steps of tree ensembles. Fitted weights are copied out to
numpy arrays: prediction is a plain numpy forward pass (no scikit-learn needed after fitting), and
:meth:`Surrogate.save` writes an ``.npz`` of arrays plus a JSON header that :meth:`Surrogate.load`
reads with ``allow_pickle=False`` — no pickle, so a model file from anywhere is safe to load.

Targets (``target``):

* ``"components"`` — the regressor predicts each cost component (e.g. pFIC's ``fc_corr_cost``,
  ``fc_mean_diff``, ``fcd_ks``), each standardised, as DELSSOME does; the cost is their sum. Each
  component is a smoother, better-conditioned function of the parameters than their sum (e.g. the
  KS term saturates at 1 where the FC terms still vary), and a multi-output network shares its
  hidden layers between them. Used only when the stored loss *is* the plain sum of stored
  components (checked against every registered loss of :mod:`raybrain.losses` on the data).
* ``"loss"`` — the regressor predicts the loss directly. Needed when the data only carry the
  total, e.g. refits on the losses an ask/tell optimizer was told.
* ``"auto"`` (default) — ``"components"`` when the loss decomposes, else ``"loss"``.

Training rows: phase ``train`` at each experiment's top fidelity (losses at other fidelities do not
compare, :mod:`raybrain.results`). The regressor uses valid rows only (invalid rows carry the
loss's arbitrary ``worst`` value); the classifier uses every row, its label ``plausible`` (firing
rates in range, and valid) where recorded, else ``valid`` (models without a rate, e.g. Hopf). A
single-class label gives a constant classifier.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["Surrogate", "training_rows", "load_training_data", "incumbents", "first_reach", "speedup"]

FORMAT = "raybrain-surrogate/1"


def load_training_data(source) -> pd.DataFrame:
    """A dataframe of evaluations from ``source``: a DataFrame, a ``.parquet`` file, or a results
    directory (:func:`raybrain.results.load`)."""
    if isinstance(source, pd.DataFrame):
        return source
    p = Path(os.fspath(source))
    if p.is_dir():
        from . import results

        return results.load(p).evaluations
    if p.is_file():
        return pd.read_parquet(p)
    raise ValueError(f"{p}: neither a results directory nor a parquet file")


def training_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows usable as training records: phase ``train`` (when recorded) at the top fidelity of
    their experiment (when recorded), with a finite loss."""
    if "phase" in df:
        df = df[df["phase"].fillna("train") == "train"]
    if "fidelity" in df and len(df):
        key = df["experiment"] if "experiment" in df else pd.Series(0, index=df.index)
        top = df["fidelity"].groupby(key).transform("max")
        df = df[df["fidelity"] == top]
    loss = pd.to_numeric(df["loss"], errors="coerce").astype(float)
    return df[np.isfinite(loss.to_numpy())]


def _params_of(df: pd.DataFrame) -> list[str]:
    cols = list(df.columns)
    if "dt" in cols and "loss" in cols:
        return cols[cols.index("dt") + 1:cols.index("loss")]
    raise ValueError("cannot tell the parameter columns (no 'dt' … 'loss' schema): pass params=")


def _bool(s: pd.Series | None, n: int, default: bool) -> np.ndarray:
    if s is None:
        return np.full(n, default)
    return s.astype("boolean").fillna(default).to_numpy(dtype=bool)


def _labels(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(valid, plausible) per row; plausible falls back to valid where not recorded."""
    valid = _bool(rows.get("valid"), len(rows), True)
    if "plausible" in rows:
        p = rows["plausible"].astype("boolean")
        plaus = np.where(p.isna().to_numpy(), valid, p.fillna(False).to_numpy(dtype=bool))
    else:
        plaus = valid.copy()
    return valid, plaus & valid


class _Keys(dict):
    """A dict that records which keys were read (to learn which components a loss adds up)."""

    def __init__(self, *a):
        super().__init__(*a)
        self.used: list[str] = []

    def __getitem__(self, k):
        if k not in self.used:
            self.used.append(k)
        return super().__getitem__(k)


def cost_components(rows: pd.DataFrame) -> list[str] | None:
    """The stored components whose plain sum is the stored loss on the valid rows (found by trying
    each registered loss of :mod:`raybrain.losses`), or None."""
    from .losses import LOSSES

    valid, _ = _labels(rows)
    if not valid.any():
        return None
    y = rows["loss"].to_numpy(dtype=float)[valid]
    for cls in LOSSES.values():
        comps = getattr(cls, "components", ())
        if not comps or not set(comps) <= set(rows.columns):
            continue
        vals = _Keys({k: pd.to_numeric(rows[k], errors="coerce").to_numpy(dtype=float)[valid] for k in comps})
        try:
            cls._total(None, vals)
        except Exception:  # pragma: no cover - a loss whose total needs its instance
            continue
        used = vals.used
        summed = np.sum([vals[k] for k in used], axis=0)
        if np.all(np.isfinite(summed)) and np.allclose(summed, y, rtol=1e-6, atol=1e-9):
            return list(used)
    return None


# -- a numpy forward pass of a fitted scikit-learn MLP ----------------------------------------

def _net(model) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.ascontiguousarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64))
            for W, b in zip(model.coefs_, model.intercepts_)]


def _forward(layers, x: np.ndarray) -> np.ndarray:
    h = x
    for W, b in layers[:-1]:
        h = np.tanh(h @ W + b)
    W, b = layers[-1]
    return h @ W + b


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class Surrogate:
    """A fitted surrogate; build with :meth:`fit` or :meth:`load` (see the module docstring).

    Attributes: ``params`` (names, in column order of ``theta``), ``bounds`` (P, 2), ``target``
    (``"components"`` or ``"loss"``), ``outputs`` (the predicted columns), ``n_train``,
    ``invalid_loss`` (the smallest loss of an invalid training row: told losses at or above it are
    failures), ``loss_range`` ((min, max) of the valid training losses).
    """

    def __init__(self, params, bounds, target, outputs, y_mean, y_std, regressors, classifiers,
                 p_const, n_train, invalid_loss, loss_range, meta=None):
        self.params = list(params)
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self.target = target
        self.outputs = list(outputs)
        self.y_mean = np.asarray(y_mean, dtype=np.float64)
        self.y_std = np.asarray(y_std, dtype=np.float64)
        self.regressors = regressors      # list of nets, each a list of (W, b)
        self.classifiers = classifiers    # list of nets (empty: constant p_const)
        self.p_const = float(p_const)
        self.n_train = int(n_train)
        self.invalid_loss = None if invalid_loss is None else float(invalid_loss)
        self.loss_range = (float(loss_range[0]), float(loss_range[1]))
        self.meta = dict(meta or {})

    def __repr__(self):
        return (f"Surrogate(params={self.params}, target={self.target!r}, outputs={self.outputs}, "
                f"ensemble={len(self.regressors)}, n_train={self.n_train})")

    # -- fitting --------------------------------------------------------------------------------
    @classmethod
    def fit(cls, df, params: Sequence[str] | None = None, seed: int = 0, *, target: str = "auto",
            bounds=None, hidden: Sequence[int] = (32, 32), ensemble: int = 3, alpha: float = 1e-4,
            max_iter: int = 1000, extra=None, select: bool = True) -> "Surrogate":
        """Fit on the evaluations ``df`` (a DataFrame, parquet path or results directory).

        ``params``: parameter columns (default: those of the results schema); ``bounds`` (P, 2)
        for the input scaling (default: the data's range); ``extra``: ``(theta, loss)`` rows to
        add to the cost regressor (e.g. an optimizer's told evaluations; needs ``target="loss"``,
        which ``"auto"`` then picks); ``select``: keep only :func:`training_rows`."""
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        df = load_training_data(df)
        params = list(params) if params is not None else _params_of(df)
        missing = [p for p in params if p not in df.columns]
        if missing:
            raise ValueError(f"parameter column(s) {missing} not in the data")
        rows = training_rows(df) if select else df[np.isfinite(df["loss"].to_numpy(dtype=float))]
        rows = rows[np.all(np.isfinite(rows[params].to_numpy(dtype=float)), axis=1)]
        if len(rows) < 4:
            raise ValueError(f"need at least 4 training rows, got {len(rows)}")
        X = rows[params].to_numpy(dtype=np.float64)
        valid, plaus = _labels(rows)
        if target not in ("auto", "components", "loss"):
            raise ValueError(f"target must be 'auto', 'components' or 'loss', got {target!r}")
        comps = cost_components(rows)
        if target == "components" and (comps is None or extra is not None):
            raise ValueError("target 'components' needs stored components that add up to the loss "
                             "and no extra (loss-only) rows")
        if target == "auto":
            target = "components" if comps is not None and extra is None else "loss"
        outputs = comps if target == "components" else ["loss"]
        if bounds is None:
            lo, hi = X.min(axis=0), X.max(axis=0)
            hi = np.where(hi > lo, hi, lo + 1.0)
            bounds = np.column_stack([lo, hi])
        bounds = np.asarray(bounds, dtype=np.float64).reshape(len(params), 2)
        Xr = X[valid]
        Y = rows[outputs].to_numpy(dtype=np.float64)[valid]
        if extra is not None:
            et, el = np.asarray(extra[0], dtype=np.float64).reshape(-1, len(params)), np.asarray(extra[1], dtype=np.float64).reshape(-1, 1)
            Xr, Y = np.vstack([Xr, et]), np.vstack([Y, el])
        if len(Xr) < 4:
            raise ValueError(f"need at least 4 valid training rows, got {len(Xr)}")
        y_mean, y_std = Y.mean(axis=0), Y.std(axis=0)
        y_std = np.where(y_std > 0, y_std, 1.0)
        scale = lambda x: 2.0 * (x - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0]) - 1.0  # noqa: E731
        hidden = tuple(int(h) for h in hidden)
        regs, clfs = [], []
        for k in range(int(ensemble)):
            m = MLPRegressor(hidden_layer_sizes=hidden, activation="tanh", solver="lbfgs", alpha=alpha,
                             max_iter=max_iter, random_state=int(seed) * 1000 + k)
            _quiet(m.fit, scale(Xr), (Y - y_mean) / y_std)
            regs.append(_net(m))
        p_const = float(plaus.mean())
        if 0 < plaus.sum() < len(plaus):
            for k in range(int(ensemble)):
                m = MLPClassifier(hidden_layer_sizes=hidden, activation="tanh", solver="lbfgs", alpha=alpha,
                                  max_iter=max_iter, random_state=int(seed) * 1000 + 500 + k)
                _quiet(m.fit, scale(X), plaus)
                net = _net(m)
                if not bool(m.classes_[1]):  # p is that of classes_[1]; make it P(plausible)
                    W, b = net[-1]
                    net[-1] = (-W, -b)
                clfs.append(net)
        ly = rows["loss"].to_numpy(dtype=float)
        invalid_loss = float(ly[~valid].min()) if (~valid).any() else None
        lv = ly[valid]
        return cls(params, bounds, target, outputs, y_mean, y_std, regs, clfs, p_const, len(rows),
                   invalid_loss, (lv.min(), lv.max()) if lv.size else (0.0, 1.0),
                   meta={"seed": int(seed), "hidden": list(hidden), "alpha": float(alpha),
                         "n_regression": int(len(Xr)), "n_extra": 0 if extra is None else int(len(extra[1]))})

    # -- prediction -----------------------------------------------------------------------------
    def _scale(self, theta) -> np.ndarray:
        t = np.asarray(theta, dtype=np.float64)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != len(self.params):
            raise ValueError(f"theta must have shape (n, {len(self.params)}) for params {self.params}, "
                             f"got {np.shape(theta)}")
        b = self.bounds
        return 2.0 * (t - b[:, 0]) / (b[:, 1] - b[:, 0]) - 1.0

    def predict_outputs(self, theta) -> np.ndarray:
        """The predicted ``outputs`` (components or the loss), shape (n, len(outputs))."""
        x = self._scale(theta)
        z = np.mean([_forward(net, x) for net in self.regressors], axis=0)
        return z * self.y_std + self.y_mean

    def predict_plausible(self, theta) -> np.ndarray:
        """Predicted probability (n,) that a candidate is plausible (valid and rates in range)."""
        x = self._scale(theta)
        if not self.classifiers:
            return np.full(x.shape[0], self.p_const)
        return np.mean([_sigmoid(_forward(net, x)[:, 0]) for net in self.classifiers], axis=0)

    def predict(self, theta) -> tuple[np.ndarray, np.ndarray]:
        """``(cost, p_plausible)``, each (n,): the predicted loss (the sum of the predicted
        components with ``target="components"``) and the probability of plausibility."""
        return self.predict_outputs(theta).sum(axis=1), self.predict_plausible(theta)

    def score(self, df, select: bool = True) -> dict[str, Any]:
        """Held-out quality on the evaluations ``df``: ``cost_r`` (Pearson r of predicted and
        recorded loss on valid rows), ``cost_spearman``, ``cost_rmse``, ``class_accuracy``
        (threshold 0.5, every row), ``class_majority`` (the accuracy of always predicting the
        commoner label, for reference), ``n_train``, ``n_test``."""
        from scipy.stats import pearsonr, spearmanr

        df = load_training_data(df)
        rows = training_rows(df) if select else df
        rows = rows[np.all(np.isfinite(rows[self.params].to_numpy(dtype=float)), axis=1)]
        X = rows[self.params].to_numpy(dtype=np.float64)
        valid, plaus = _labels(rows)
        cost, p = self.predict(X) if len(X) else (np.zeros(0), np.zeros(0))
        y = rows["loss"].to_numpy(dtype=float)
        out: dict[str, Any] = {"n_train": self.n_train, "n_test": int(len(rows)), "n_test_valid": int(valid.sum())}
        if valid.sum() >= 3 and np.ptp(y[valid]) > 0 and np.ptp(cost[valid]) > 0:
            out["cost_r"] = float(pearsonr(cost[valid], y[valid])[0])
            out["cost_spearman"] = float(spearmanr(cost[valid], y[valid])[0])
        else:
            out["cost_r"] = out["cost_spearman"] = float("nan")
        out["cost_rmse"] = float(np.sqrt(np.mean((cost[valid] - y[valid]) ** 2))) if valid.any() else float("nan")
        out["class_accuracy"] = float(np.mean((p >= 0.5) == plaus)) if len(p) else float("nan")
        out["class_majority"] = float(max(plaus.mean(), 1 - plaus.mean())) if len(p) else float("nan")
        return out

    # -- files ----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write an ``.npz`` of arrays with a JSON header (no pickle); returns the path."""
        header = {"format": FORMAT, "params": self.params, "target": self.target, "outputs": self.outputs,
                  "p_const": self.p_const, "n_train": self.n_train, "invalid_loss": self.invalid_loss,
                  "loss_range": list(self.loss_range), "meta": self.meta,
                  "regressors": [len(n) for n in self.regressors],
                  "classifiers": [len(n) for n in self.classifiers]}
        arrays = {"header": np.array(json.dumps(header)), "bounds": self.bounds, "y_mean": self.y_mean,
                  "y_std": self.y_std}
        for kind, nets in (("reg", self.regressors), ("clf", self.classifiers)):
            for i, net in enumerate(nets):
                for j, (W, b) in enumerate(net):
                    arrays[f"{kind}{i}_W{j}"], arrays[f"{kind}{i}_b{j}"] = W, b
        path = Path(path)
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to a str path
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path) -> "Surrogate":
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(Path(path), allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            if header.get("format") != FORMAT:
                raise ValueError(f"{path}: not a {FORMAT} file")
            nets = {kind: [[(z[f"{kind}{i}_W{j}"], z[f"{kind}{i}_b{j}"]) for j in range(n)]
                           for i, n in enumerate(header[name])]
                    for kind, name in (("reg", "regressors"), ("clf", "classifiers"))}
            return cls(header["params"], z["bounds"], header["target"], header["outputs"], z["y_mean"],
                       z["y_std"], nets["reg"], nets["clf"], header["p_const"], header["n_train"],
                       header["invalid_loss"], header["loss_range"], header.get("meta"))


# -- the end-to-end speed-up of a surrogate run over a plain one ------------------------------

def incumbents(run: pd.DataFrame) -> pd.DataFrame:
    """The incumbent of one run after each of its generations, from its rows of the results
    dataframe: ``generation``, ``sims`` (training simulations spent by the end of it: ``new_sims``
    where recorded, else one per row, every fidelity counted), ``eval_index`` and ``train_loss`` of
    the incumbent (the lowest finite training loss so far at the run's top fidelity; the earliest
    on ties, as :func:`raybrain.results.best`). Generations before the first finite loss are left
    out."""
    tr = run[run["phase"] == "train"] if "phase" in run else run
    sims_col = tr["new_sims"].fillna(1).astype(float) if "new_sims" in tr else pd.Series(1.0, index=tr.index)
    per_gen_sims = sims_col.groupby(tr["generation"]).sum().sort_index()
    top = tr[tr["fidelity"] == tr["fidelity"].max()].sort_values(["generation", "eval_index"], kind="stable")
    out, best, best_loss = [], None, np.inf
    for g, grp in top.groupby("generation", sort=True):
        loss = grp["loss"].to_numpy(dtype=float)
        i = int(np.argmin(np.where(np.isfinite(loss), loss, np.inf)))
        if np.isfinite(loss[i]) and loss[i] < best_loss:
            best, best_loss = grp.iloc[i], float(loss[i])
        if best is not None:
            out.append({"generation": int(g), "sims": float(per_gen_sims.loc[:g].sum()),
                        "eval_index": int(best["eval_index"]), "train_loss": best_loss})
    return pd.DataFrame(out)


def first_reach(curve: pd.DataFrame, target: float, col: str = "sims") -> tuple[float, bool]:
    """``(cost, reached)``: ``col`` at the first row of ``curve`` (ascending) whose ``test_cost`` is
    at most ``target``; if none, the last row's ``col`` and False (a lower bound)."""
    hit = curve[curve["test_cost"].to_numpy(dtype=float) <= target + 1e-12]
    if len(hit):
        return float(hit[col].iloc[0]), True
    return float(curve[col].iloc[-1]), False


def speedup(surrogate: pd.DataFrame, reference: pd.DataFrame, train_sims: float = 0.0,
            train_wall: float = 0.0, target: float | None = None, tol: float = 0.0) -> dict:
    """The end-to-end speed-up of a surrogate run over a reference (plain) run at equal test cost.

    Each curve: one row per generation, ascending, with ``sims`` and ``test_cost`` (the held-out
    cost of the run's incumbent then) and optionally ``wall_s`` (cumulative). ``target``: the test
    cost to reach (default: the surrogate run's final one), ``tol``: a margin (a test cost at most
    target + tol counts as reached; e.g. twice the test costs' standard error, so that differences
    below the noise do not count). Returns ``target_test_cost``,
    ``sims_surrogate`` / ``sims_reference`` (at the first generation whose test cost is at most the
    target; a run that never gets there is charged its whole budget, ``reached_*`` False),
    ``bound`` (``"="`` both reached; ``">"`` only the surrogate run did, so every speed-up is a
    lower bound; ``"<"`` only the reference did, an upper bound; ``"?"`` neither),
    ``speedup_sims`` = sims_reference / sims_surrogate, ``speedup_sims_with_training`` (the
    ``train_sims`` added to the surrogate run's), and the same for wall seconds (``train_wall``)
    when both curves have ``wall_s``."""
    if target is None:
        target = float(surrogate["test_cost"].iloc[-1])
    ns, rs = first_reach(surrogate, target + tol)
    nc, rc = first_reach(reference, target + tol)
    out = {"target_test_cost": float(target), "tol": float(tol), "surrogate_final_test_cost": float(surrogate["test_cost"].iloc[-1]),
           "reference_final_test_cost": float(reference["test_cost"].iloc[-1]),
           "sims_surrogate": ns, "sims_reference": nc, "reached_surrogate": rs, "reached_reference": rc,
           "bound": {(True, True): "=", (True, False): ">", (False, True): "<"}.get((rs, rc), "?"),
           "speedup_sims": nc / ns, "speedup_sims_with_training": nc / (ns + train_sims),
           "train_sims": float(train_sims)}
    if "wall_s" in surrogate and "wall_s" in reference:
        ws, _ = first_reach(surrogate, target + tol, "wall_s")
        wc, _ = first_reach(reference, target + tol, "wall_s")
        out.update(wall_surrogate=ws, wall_reference=wc, speedup_wall=wc / ws,
                   speedup_wall_with_training=wc / (ws + train_wall), train_wall_s=float(train_wall))
    return out


def _quiet(fn, X, y):
    """Call a scikit-learn fit without its ConvergenceWarning (L-BFGS stops at max_iter), on one
    BLAS thread: small networks gain nothing from threads, and on a busy machine (Ray workers,
    parallel simulations) threaded BLAS made these fits ~20x slower; one thread is also
    reproducible."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(X, y)
