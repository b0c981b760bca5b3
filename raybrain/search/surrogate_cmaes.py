r"""``surrogate-cmaes``: CMA-ES on a learned cost surrogate, proposing its best candidates for real
simulation (DELSSOME; Zeng et al.).

At construction the family fits a :class:`raybrain.surrogate.Surrogate` on earlier evaluations
(setting ``train``: a results directory, a ``.parquet`` file or a DataFrame; training phase, top
fidelity). Each :meth:`ask` then runs ``restarts`` independent CMA-ES searches (Hansen 2016,
:math:`(\mu/\mu_w, \lambda)` with cumulative step-size adaptation, a compact numpy version below)
for ``generations`` generations each on the unit box, minimising the surrogate's penalised cost

.. math:: \hat f(\theta) = \widehat{\mathrm{cost}}(\theta) + \kappa\,(1 - \hat p_\mathrm{plausible}(\theta)),

with :math:`\kappa` = ``penalty`` (default: the range of the valid training losses, so a candidate
predicted implausible never ranks above a plausible one by much). The first search starts at the
best point known (the best real evaluation told so far, else the best plausible training row), the
others at uniform random points. Of every point the searches evaluated, the ``population`` best by
:math:`\hat f` are proposed, greedily skipping any within ``min_distance`` (Euclidean, unit box) of
one already proposed or already told, so one ask does not spend its real simulations on copies
of one point. Those candidates are simulated for real by the caller (and so, like DELSSOME, the
held-out validation and test stages re-simulate with the real integrator).

After each fully told generation the surrogate is refitted (``refit``: every that many
generations; 0/False never) on the training rows plus every told evaluation. The told losses carry
no components, so refits predict the loss directly (``target="loss"``); told losses at or above the
smallest loss of an invalid training row (the loss's ``worst``; without one, the ``worst`` of the
attached objective's loss) are left out of the regression.

Training rows of other subjects: ``train_subjects`` ``"same"`` (default) keeps, once the run's
objective is attached (:meth:`SurrogateCMAES.attach_objective`, called by the population trainable
before the first ask; or :meth:`SurrogateCMAES.use_subject`), only the training rows of the subject
this run fits, as DELSSOME trains on records of the target it fits; when the data hold no row of
that subject (or no ``subject`` column) every row is kept. ``"all"`` keeps every row; a list of
subject names keeps those.

Without ``train`` (cold start) the first asks are uniform random until the told evaluations
(at least max(4, P + 2)) can train the surrogate, which then learns from real evaluations only.

Reproducible: the inner searches draw from ``numpy.random.default_rng((seed, generation))`` and
the fits are seeded, so the same seed and tells give the same asks; :meth:`state` pickles the
optimizer with its surrogate (numpy arrays) and training rows. Requires scikit-learn (fitting).
"""
from __future__ import annotations

import numpy as np

from .base import Optimizer, require

__all__ = ["SurrogateCMAES", "cmaes_minimise"]


def cmaes_minimise(f, x0, sigma0: float, lam: int, generations: int, rng: np.random.Generator):
    """Minimise ``f`` (batch: (lam, n) -> (lam,)) over the unit box by CMA-ES from ``x0``.

    Samples outside the box are evaluated at their projection onto the box plus a quadratic
    penalty on the distance. Returns (X, F): every evaluated (projected) point and its value."""
    x0 = np.asarray(x0, dtype=np.float64)
    n = x0.size
    mu = lam // 2
    w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    w /= w.sum()
    mueff = 1.0 / np.sum(w ** 2)
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
    cs = (mueff + 2) / (n + mueff + 5)
    c1 = 2 / ((n + 1.3) ** 2 + mueff)
    cmu = min(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    damps = 1 + 2 * max(0.0, np.sqrt((mueff - 1) / (n + 1)) - 1) + cs
    chin = np.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n ** 2))
    m, sigma = x0.copy(), float(sigma0)
    C, pc, ps = np.eye(n), np.zeros(n), np.zeros(n)
    xs, fs = [], []
    for g in range(int(generations)):
        C = np.triu(C) + np.triu(C, 1).T
        d2, B = np.linalg.eigh(C)
        D = np.sqrt(np.maximum(d2, 1e-20))
        y = (rng.standard_normal((lam, n)) * D) @ B.T
        x = m + sigma * y
        xc = np.clip(x, 0.0, 1.0)
        fx = np.asarray(f(xc), dtype=np.float64) + 1e3 * np.sum((x - xc) ** 2, axis=1)
        xs.append(xc)
        fs.append(fx)
        idx = np.argsort(fx, kind="stable")[:mu]
        yw = w @ y[idx]
        m = m + sigma * yw
        ps = (1 - cs) * ps + np.sqrt(cs * (2 - cs) * mueff) * (B @ ((B.T @ yw) / D))
        hsig = np.linalg.norm(ps) / np.sqrt(1 - (1 - cs) ** (2 * (g + 1))) / chin < 1.4 + 2 / (n + 1)
        pc = (1 - cc) * pc + hsig * np.sqrt(cc * (2 - cc) * mueff) * yw
        ysel = y[idx]
        C = ((1 - c1 - cmu) * C + c1 * (np.outer(pc, pc) + (1 - hsig) * cc * (2 - cc) * C)
             + cmu * (ysel.T * w) @ ysel)
        sigma *= np.exp(min(1.0, (cs / damps) * (np.linalg.norm(ps) / chin - 1)))
        if sigma * D.max() < 1e-9:
            break
    return np.vstack(xs), np.concatenate(fs)


class SurrogateCMAES(Optimizer):
    """CMA-ES on a learned surrogate (see the module docstring). Settings: ``train`` (results
    directory, parquet file or DataFrame; None: cold start), ``params`` (parameter columns in bounds order;
    default the results' parameter columns), ``target`` (initial model: "auto", "components",
    "loss"; default "loss"), ``generations`` (surrogate generations per restart per ask, 100),
    ``inner_population`` (default 4 + 3 ln P, at least 8), ``restarts`` (2), ``sigma0`` (0.3 of
    each range), ``penalty`` (None: the valid training losses' range), ``refit`` (refit every that
    many told generations, default 1; 0/False never), ``hidden`` ((32, 32)), ``ensemble`` (3),
    ``min_distance`` (0.02 in the unit box), ``train_subjects`` ("same", "all" or a list of subject
    names: which subjects' training rows to learn from)."""

    name = "surrogate-cmaes"
    modes = ("population",)  # learns from the run's objective (attach_objective): no trial-mode form
    defaults = {"train": None, "params": None, "target": "loss", "generations": 100, "inner_population": None,
                "restarts": 2, "sigma0": 0.3, "penalty": None, "refit": 1, "hidden": (32, 32), "ensemble": 3,
                "min_distance": 0.02, "train_subjects": "same"}

    @classmethod
    def default_population(cls, dim: int) -> int:
        return 8

    def _setup(self) -> None:
        require("sklearn", "scikit-learn")
        from ..surrogate import _params_of, load_training_data, training_rows

        s = self.settings
        for key in ("generations", "restarts", "ensemble"):
            v = s[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"surrogate-cmaes: setting {key!r} must be a positive integer, got {v!r}")
        for key in ("sigma0", "min_distance"):
            v = s[key]
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not v > 0:
                raise ValueError(f"surrogate-cmaes: setting {key!r} must be a positive number, got {v!r}")
        refit = s["refit"]
        if isinstance(refit, bool):
            refit = int(refit)
        if not isinstance(refit, (int, np.integer)) or refit < 0:
            raise ValueError(f"surrogate-cmaes: setting 'refit' must be a non-negative integer, got {refit!r}")
        self._refit_every = int(refit)
        lam = s["inner_population"]
        self._lam = max(8, 4 + int(3 * np.log(self.dim))) if lam is None else int(lam)
        if self._lam < 2:
            raise ValueError(f"surrogate-cmaes: setting 'inner_population' must be >= 2, got {lam!r}")
        self._fit_kw = {"hidden": tuple(s["hidden"]), "ensemble": int(s["ensemble"])}
        self.surrogate = None
        self._train_best = None
        self._penalty = None if s["penalty"] is None else float(s["penalty"])
        ts = s["train_subjects"]
        if not (ts in ("same", "all") or (isinstance(ts, (list, tuple)) and all(isinstance(x, str) for x in ts))):
            raise ValueError(f"surrogate-cmaes: setting 'train_subjects' must be 'same', 'all' or a list of "
                             f"subject names, got {ts!r}")
        self.subject = None  # the subject whose rows were kept (train_subjects "same"), once known
        if s["train"] is None:  # cold start: uniform asks until the told evaluations can train it
            self.params = list(s["params"]) if s["params"] is not None else [f"x{j}" for j in range(self.dim)]
            if len(self.params) != self.dim:
                raise ValueError(f"surrogate-cmaes: setting 'params' names {len(self.params)} parameter(s), "
                                 f"the bounds {self.dim}")
            self._rows = None
        else:
            df = load_training_data(s["train"])
            params = list(s["params"]) if s["params"] is not None else _params_of(df)
            if len(params) != self.dim:
                raise ValueError(f"surrogate-cmaes: the training data have {len(params)} parameter(s) {params}, "
                                 f"the bounds {self.dim}; pass setting 'params' in bounds order")
            keep = [c for c in df.columns if c in set(params) | {"loss", "valid", "plausible", "phase", "fidelity",
                                                                  "experiment", "subject"}
                    or c in _component_columns(df)]
            self._rows = training_rows(df)[keep].reset_index(drop=True)
            if isinstance(ts, (list, tuple)):
                if "subject" not in self._rows:
                    raise ValueError("surrogate-cmaes: setting 'train_subjects' lists subjects but the training "
                                     "data have no 'subject' column")
                self._rows = self._rows[self._rows["subject"].isin(list(ts))].reset_index(drop=True)
                if self._rows.empty:
                    raise ValueError(f"surrogate-cmaes: no training rows of subject(s) {list(ts)}")
            self.params = params
            self._fit_initial()
        self._told_theta: list[np.ndarray] = []
        self._told_loss: list[float] = []
        self._told_gens = 0
        self._worst = None  # the loss's worst (a failed simulation), from attach_objective
        self.n_surrogate_evals = 0
        self.n_refits = 0

    def _fit_initial(self) -> None:
        """Fit the surrogate on the training rows alone; the first search starts at their best."""
        from ..surrogate import Surrogate

        s = self.settings
        self.surrogate = Surrogate.fit(self._rows, self.params, seed=self.seed, target=s["target"],
                                       bounds=self.bounds, select=False, **self._fit_kw)
        if s["penalty"] is None:
            lo, hi = self.surrogate.loss_range
            self._penalty = max(hi - lo, 1e-12)
        valid, plaus = _labels(self._rows)
        good = plaus if plaus.any() else valid
        y = self._rows["loss"].to_numpy(dtype=float)
        k = int(np.flatnonzero(good)[np.argmin(y[good])]) if good.any() else 0
        self._train_best = np.clip(self.to_unit(self._rows[self.params].to_numpy(dtype=float)[k]), 0.0, 1.0)

    def use_subject(self, name) -> bool:
        """With ``train_subjects`` "same": keep only the training rows of subject ``name`` (when the
        data hold any) and refit. Only before the first ask, and once (a restored run keeps its
        rows); returns whether the rows changed."""
        if (self.settings["train_subjects"] != "same" or self._rows is None or self.subject is not None
                or name is None or self.generation > 0 or self._told_theta):
            return False
        self.subject = str(name)
        if "subject" not in self._rows:
            return False
        mine = (self._rows["subject"] == self.subject).to_numpy()
        if not mine.any() or mine.all():
            return False
        self._rows = self._rows[mine].reset_index(drop=True)
        self._fit_initial()
        return True

    def attach_objective(self, objective, seed=None, repeats: int = 1) -> None:
        """Hook of the population trainable (before the first ask, and again after a restore):
        learn from the training rows of the objective's subject (``train_subjects`` "same")."""
        subject = getattr(objective, "subject", None)
        worst = getattr(getattr(objective, "loss", None), "worst", None)
        if worst is not None:  # the loss of a failed simulation: kept out of refits
            self._worst = float(worst)
        self.use_subject(getattr(subject, "name", subject if isinstance(subject, str) else None))

    def _objective(self, u: np.ndarray) -> np.ndarray:
        cost, p = self.surrogate.predict(self.from_unit(u))
        self.n_surrogate_evals += len(u)
        return cost + self._penalty * (1.0 - p)

    def _ask_unit(self) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.generation))
        s = self.settings
        if self.surrogate is None:  # cold start
            return rng.uniform(0.0, 1.0, (self.population, self.dim))
        start = self.to_unit(self.best_theta) if self.best_theta is not None else self._train_best
        if start is None:
            start = np.full(self.dim, 0.5)
        X, F = [], []
        for r in range(int(s["restarts"])):
            x0 = start if r == 0 else rng.uniform(0.0, 1.0, self.dim)
            x, fx = cmaes_minimise(self._objective, x0, float(s["sigma0"]), self._lam, int(s["generations"]), rng)
            X.append(x)
            F.append(fx)
        X, F = np.vstack(X), np.concatenate(F)
        taken = [self.to_unit(t) for t in self._told_theta]
        chosen: list[np.ndarray] = []
        d2 = float(s["min_distance"]) ** 2
        T = np.array(taken).reshape(-1, self.dim)
        for i in np.argsort(F, kind="stable"):
            if len(chosen) == self.population:
                break
            if T.size and np.min(np.sum((T - X[i]) ** 2, axis=1)) < d2:
                continue
            chosen.append(X[i])
            T = np.vstack([T, X[i][None]])
        while len(chosen) < self.population:  # everything evaluated is too close: explore
            chosen.append(rng.uniform(0.0, 1.0, self.dim))
        return np.array(chosen)

    def _tell(self, index, losses) -> None:
        for i, y in zip(index, losses):
            self._told_theta.append(self._pending[i].copy())
            self._told_loss.append(float(y))
        left = self._left.copy()
        left[index] = False
        if left.any():
            return
        self._told_gens += 1
        if self.surrogate is None or (self._refit_every and self._told_gens % self._refit_every == 0):
            self._refit()

    def _refit(self) -> None:
        from ..surrogate import Surrogate

        t = np.array(self._told_theta)
        y = np.array(self._told_loss)
        bad = None if self.surrogate is None else self.surrogate.invalid_loss
        if bad is None:  # no failed training row: the attached loss's worst, if known
            bad = getattr(self, "_worst", None)
        ok = np.isfinite(y) & (y < bad if bad is not None else True)
        seed = self.seed + 7919 * self._told_gens
        if self._rows is None:  # cold start: the told evaluations are all the data
            if ok.sum() < max(4, self.dim + 2):
                return
            import pandas as pd

            rows = pd.DataFrame(t[ok], columns=self.params).assign(loss=y[ok], valid=True)
            self.surrogate = Surrogate.fit(rows, self.params, seed=seed, target="loss", bounds=self.bounds,
                                           select=False, **self._fit_kw)
            if self.settings["penalty"] is None:
                lo, hi = self.surrogate.loss_range
                self._penalty = max(hi - lo, 1e-12)
        else:
            self.surrogate = Surrogate.fit(self._rows, self.params, seed=seed, target="loss", bounds=self.bounds,
                                           select=False, extra=(t[ok], y[ok]), **self._fit_kw)
        self.n_refits += 1


def _component_columns(df) -> list[str]:
    cols = list(df.columns)
    if "loss" in cols and "valid" in cols and cols.index("valid") > cols.index("loss"):
        return cols[cols.index("loss") + 1:cols.index("valid")]
    return []


def _labels(rows):
    from ..surrogate import _labels as labels

    return labels(rows)
