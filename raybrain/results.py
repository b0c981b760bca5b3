"""Results: one tidy table, one row per evaluation, written as parquet while the experiment runs.

Layout under an experiment's storage path ``root``::

    root/evaluations/<run>/gen-000000-f0.parquet     training: one file per (run, generation, fidelity)
    root/evaluations/<run>/validation-000000.parquet held-out re-simulation: one per validation target
    root/evaluations/<run>/test-000000.parquet       the winner on each test target
    root/evaluations/<run>/profile-000000.parquet    the winner's profile, one per validation target
    root/evaluations/<run>/compacted.parquet         many files, after compact() (optional)
    root/runs/<run>.json                             run-level summary written by the run
    root/schema.json                                 the columns every file has (Schema), when declared

Many Tune trials (one per (subject, optimizer, seed) run, possibly on different nodes of a shared
file system) write at once. Nothing is shared between writers: a file's name is a function of
``(run_id, phase, generation, fidelity)`` alone, and it is written to a temporary name and moved into place with
``os.replace``, so a reader never sees half a file and a generation evaluated again after a resume
replaces its file instead of adding rows. The columns that depend on a run's history
(``eval_index``, ``cum_sims``, ``cum_wall_s``) are derived by :func:`load`, not stored, so they stay
right whichever generations were rewritten.

``phase`` is ``"train"`` for the search's own evaluations, ``"validation"`` for the best training
candidates re-simulated with fresh noise on the validation targets, ``"test"`` for the winner on the
test targets (the train/validation/test protocol of Zhang et al. 2024); held-out rows carry the
target they were simulated on in ``subject``, ``fidelity`` -1 (the validation fidelity; ``duration``
and ``dt`` say which) and ``source_eval``, the ``eval_index`` of the training evaluation they
re-simulate. ``"profile"`` rows (``profile-000000.parquet``, one per validation target) are the
validated winner with one parameter moved ``profile_step`` steps (``profile_param``; the winner
itself at step 0). Every record carries ``loss_se``, the standard error of its loss over the noise
repeats (null with one repeat). A multi-fidelity generation (successive halving, ASHA rungs) writes one file per rung;
a row that continued an earlier rung's simulation has ``new_sims`` 0.

Column order (the schema): ``HEAD``, one column per parameter, ``loss``, the loss components,
``TAIL``, then ``KNOWN_EXTRAS`` (every file has all of them, null where a record has no value),
then any other record fields (e.g. spectral band powers). Parameters are the columns between ``dt``
and ``loss`` (:func:`param_columns`); the meaning and unit of every column is in ``docs/results.md``.

**One schema per experiment.** Every file of an experiment has the same columns, in the same
order, with the same types, so that any parquet reader (pandas, pyarrow.dataset, polars, DuckDB)
given ``root/evaluations`` sees every column of every file. The experiment declares its
:class:`Schema` (parameters, loss components, further fields) once, in ``root/schema.json``
(``ResultsWriter(root, name, schema=...)``; ``raybrain run`` does it from the config); every
writer of that root then writes exactly those columns, nulls where a record has no value, and
refuses a record field the schema does not declare rather than write a file that differs. A
writer with no declared schema (a library user's) writes ``HEAD``, the parameters and components
of the records, ``TAIL``, every ``KNOWN_EXTRAS`` column and the records' other fields (float64
when all null); its files agree whenever its records carry the same fields. Stored files hold
no derived columns; a raw reader also sees, after :func:`compact` and a later rewrite of a
generation, that generation's rows twice (keep the newest ``time`` per ``(run_id, phase,
generation, fidelity)``): :func:`load` and ``raybrain export`` do both for you.

Losses at different fidelities (simulated duration, dt) are not comparable, so :func:`best`,
:func:`summary` and :func:`analyze` rank only training evaluations at the experiment's highest
fidelity; the cost columns (``cum_sims``, ``cum_wall_s``) count every evaluation, cheap fidelities
and held-out re-simulations included.
:func:`load` needs pandas and pyarrow only (no Ray).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HEAD = ("experiment", "run_id", "mode", "phase", "subject", "optimizer", "seed", "eval_index", "generation",
        "fidelity", "duration", "dt")
TAIL = ("valid", "diverged", "plausible", "rate_mean", "ei_ratio", "wall_s", "compile_s", "cum_sims", "cum_wall_s",
        "node", "time")
META_KEYS = ("mode", "subject", "optimizer", "seed", "fidelity", "duration", "dt")
DERIVED = ("eval_index", "cum_sims", "cum_wall_s")  # computed by load(), not stored
KNOWN_EXTRAS = ("rate_min", "rate_max", "repeats", "sim_seconds", "loss_se", "profile_param", "profile_step",
                "new_sims", "source_eval")  # in every file
#: known extras :func:`load` keeps even when every value is null (a run with one noise repeat, no profile)
_KEPT_EXTRAS = ("loss_se", "profile_param", "profile_step")
PHASES = ("train", "validation", "test", "profile")
SCHEMA_FILE = "schema.json"

_TYPES = {"experiment": pa.string(), "run_id": pa.string(), "mode": pa.string(), "phase": pa.string(),
          "subject": pa.string(), "new_sims": pa.int64(), "source_eval": pa.int64(),
          "optimizer": pa.string(), "seed": pa.int64(), "generation": pa.int64(), "fidelity": pa.int64(),
          "duration": pa.float64(), "dt": pa.float64(), "loss": pa.float64(), "valid": pa.bool_(),
          "diverged": pa.bool_(), "plausible": pa.bool_(), "rate_mean": pa.float64(),
          "ei_ratio": pa.float64(), "wall_s": pa.float64(), "compile_s": pa.float64(), "node": pa.string(),
          "time": pa.timestamp("ms", tz="UTC"), "rate_min": pa.float64(), "rate_max": pa.float64(),
          "repeats": pa.int64(), "sim_seconds": pa.float64(), "loss_se": pa.float64(),
          "profile_param": pa.string(), "profile_step": pa.int64()}
_STORED_HEAD = tuple(c for c in HEAD if c not in DERIVED)
_STORED_TAIL = tuple(c for c in TAIL if c not in DERIVED)
_STANDARD = frozenset(HEAD) | frozenset(TAIL) | {"loss"}
_GEN_FILE = re.compile(r"^(gen|validation|test|profile)-(\d+)(?:-f(\d+))?\.parquet$")
_PREFIX = {"train": "gen", "validation": "validation", "test": "test", "profile": "profile"}
_KEY = ["run_id", "phase", "generation", "fidelity"]  # one file per key; the newest file wins
_COMPACTED = "compacted.parquet"


def sanitise(run_id: str) -> str:
    """File-system-safe directory name for ``run_id``; distinct ids keep distinct names (a short hash
    is appended whenever characters had to be replaced)."""
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", run_id).lstrip(".")[:100]
    if name != run_id:
        name = f"{name}-{hashlib.sha1(run_id.encode()).hexdigest()[:8]}"
    return name


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _values(records, column: str) -> list:
    """``column`` of each record (None where absent; NaN stored as null)."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in (r.get(column) for r in records)]


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (datetime, pd.Timestamp)):
        return x.isoformat()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _arrow_type(t, name: str) -> pa.DataType:
    if isinstance(t, pa.DataType):
        return t
    try:
        return pa.type_for_alias(str(t))
    except (ValueError, KeyError):
        raise ValueError(f"column {name!r}: unknown Arrow type {t!r} (use e.g. 'double', 'int64', "
                         f"'string', 'bool')") from None


@dataclass(frozen=True)
class Schema:
    """The columns of every results file of one experiment, in order, with fixed types.

    ``params`` (float64) are the parametrisation's names, ``components`` (float64) the loss's
    components, ``extras`` the further fields records carry beyond ``KNOWN_EXTRAS`` (e.g. the
    spectral features): ``{name: Arrow type}`` (a type or its name, ``"double"``, ``"int64"``,
    ``"string"``, ``"bool"``), or a list of names (all float64). A name that is a standard column,
    or already a parameter or component, is dropped from the later groups. :attr:`columns` is the
    stored order: ``HEAD`` less the derived columns, params, ``loss``, components, ``TAIL`` less
    the derived columns, ``KNOWN_EXTRAS``, extras."""

    params: tuple[str, ...]
    components: tuple[str, ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        def names(values, what):
            values = [values] if isinstance(values, str) else list(values)
            bad = [v for v in values if not isinstance(v, str) or not v]
            if bad:
                raise ValueError(f"schema {what}: column names must be non-empty strings, got {bad[0]!r}")
            return list(dict.fromkeys(values))

        params = [c for c in names(self.params, "params") if c not in _STANDARD]
        comps = [c for c in names(self.components, "components")
                 if c not in _STANDARD and c not in KNOWN_EXTRAS and c not in params]
        extras = self.extras if isinstance(self.extras, Mapping) else dict.fromkeys(names(self.extras, "extras"),
                                                                                    "double")
        names(extras, "extras")
        taken = _STANDARD | set(KNOWN_EXTRAS) | set(params) | set(comps)
        extras = {c: _arrow_type(t, c) for c, t in extras.items() if c not in taken}
        object.__setattr__(self, "params", tuple(params))
        object.__setattr__(self, "components", tuple(comps))
        object.__setattr__(self, "extras", extras)

    @property
    def columns(self) -> list[str]:
        """The stored columns, in order."""
        return (list(_STORED_HEAD) + list(self.params) + ["loss"] + list(self.components) + list(_STORED_TAIL)
                + list(KNOWN_EXTRAS) + list(self.extras))

    def type_of(self, column: str) -> pa.DataType:
        """The Arrow type of ``column``."""
        if column in _TYPES:
            return _TYPES[column]
        if column in self.extras:
            return self.extras[column]
        if column in self.params or column in self.components:
            return pa.float64()
        raise KeyError(column)

    def arrow(self) -> pa.Schema:
        """The Arrow schema every file of the experiment has."""
        return pa.schema([(c, self.type_of(c)) for c in self.columns])

    def union(self, other: "Schema") -> "Schema":
        """This schema's columns, then those of ``other`` it lacks, each in its group in ``other``
        (a column keeps the group it has here)."""
        mine = set(self.columns)
        return Schema(self.params + tuple(c for c in other.params if c not in mine),
                      self.components + tuple(c for c in other.components if c not in mine),
                      {**self.extras, **{c: t for c, t in other.extras.items() if c not in mine}})

    def to_json(self) -> str:
        return json.dumps({"params": list(self.params), "components": list(self.components),
                           "extras": {c: str(t) for c, t in self.extras.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        d = json.loads(text)
        if not isinstance(d, dict) or not isinstance(d.get("params"), list):
            raise ValueError("expected an object with a 'params' list")
        return cls(d["params"], d.get("components", ()), d.get("extras", {}))


def read_schema(path: str | os.PathLike) -> Schema | None:
    """The :class:`Schema` an experiment under ``path`` declared (``schema.json``), or None."""
    f = Path(path) / SCHEMA_FILE
    if not f.is_file():
        return None
    try:
        return Schema.from_json(f.read_text())
    except (ValueError, TypeError) as e:
        raise ValueError(f"{f}: not a results schema ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class ResultsWriter:
    """Writes one experiment's evaluations under ``root`` (a local or shared POSIX directory).

    One writer per run is enough and writers never coordinate; see the module docstring.
    ``schema`` declares the experiment's :class:`Schema` and saves it as ``root/schema.json``
    (do it once, before the runs start); without it the writer uses the one saved there, if any,
    else writes each file with the columns its records carry (module docstring).
    """

    def __init__(self, root: str | os.PathLike, experiment: str, schema: Schema | None = None):
        self.root = Path(root)
        self.experiment = str(experiment)
        if schema is not None:
            if not isinstance(schema, Schema):
                raise TypeError(f"schema must be a raybrain.results.Schema, got {type(schema).__name__}")
            text = schema.to_json()
            _atomic_write(self.root / SCHEMA_FILE, lambda p: p.write_text(text))
            self.schema = schema
        else:
            self.schema = read_schema(self.root)

    def path(self, run_id: str, generation: int, fidelity: int = 0, phase: str = "train") -> Path:
        """The file of one (run, phase, generation, fidelity): training files are per rung
        (``gen-000003-f1.parquet``), held-out ones per target (``validation-000000.parquet``)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        name = f"{_PREFIX[phase]}-{int(generation):06d}"
        if phase == "train":
            if isinstance(fidelity, bool) or not isinstance(fidelity, (int, np.integer)) or fidelity < 0:
                raise ValueError(f"training records need a fidelity index >= 0, got {fidelity!r}")
            name += f"-f{int(fidelity)}"
        return self.root / "evaluations" / sanitise(run_id) / f"{name}.parquet"

    def write_generation(self, run_id: str, generation: int, records: Sequence[Mapping[str, Any]],
                         meta: Mapping[str, Any]) -> Path:
        """Write the records of one generation (in evaluation order) at one fidelity as one parquet
        file, replacing any earlier file of the same (run, phase, generation, fidelity).

        ``meta`` needs ``mode, subject, optimizer, seed, fidelity, duration, dt``; optional ``phase``
        (default ``"train"``; held-out phases take fidelity -1), ``params``
        (parameter names, default: the record keys before ``"loss"``, which is the order
        ``Objective.evaluate`` produces), ``components`` (default: the remaining keys that are not
        standard columns) and ``node`` (default: this host's name)."""
        if isinstance(generation, bool) or not isinstance(generation, (int, np.integer)) or generation < 0:
            raise ValueError(f"generation must be an integer >= 0, got {generation!r}")
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise ValueError(f"meta for run {run_id!r} is missing {', '.join(missing)}")
        records = list(records)
        if not records:
            raise ValueError(f"records for run {run_id!r} generation {generation} is empty")
        for i, r in enumerate(records):
            if "loss" not in r:
                raise ValueError(f"records[{i}] for run {run_id!r} generation {generation} has no 'loss'")
        keys = list(dict.fromkeys(k for r in records for k in r))
        params = list(meta["params"]) if meta.get("params") is not None else keys[:keys.index("loss")]
        where = f"run {run_id!r} generation {generation}"
        schema = self.schema
        if schema is None:
            schema = self._file_schema(keys, params, records, meta.get("components"), where)
        else:
            columns = set(schema.columns) | set(DERIVED)
            unknown = [k for k in dict.fromkeys(params + keys) if k not in columns]
            if unknown:
                raise ValueError(f"{where}: records carry {unknown[0]!r}, which the experiment's schema "
                                 f"({self.root / SCHEMA_FILE}) does not declare")

        phase = meta.get("phase", "train")
        path = self.path(run_id, generation, meta["fidelity"], phase)
        n = len(records)
        const = {"experiment": self.experiment, "run_id": run_id, "generation": int(generation), "phase": phase,
                 **{k: meta[k] for k in META_KEYS}, "node": meta.get("node") or socket.gethostname(),
                 "time": datetime.now(timezone.utc)}
        arrays = []
        for c in schema.columns:
            values = [const[c]] * n if c in const else _values(records, c)
            typ = schema.type_of(c)
            try:
                arrays.append(pa.array(values, type=typ))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
                raise ValueError(f"{where}: column {c!r} has values that do not fit {typ}: {e}") from None
        table = pa.Table.from_arrays(arrays, schema=schema.arrow())
        _atomic_write(path, lambda p: pq.write_table(table, p))
        return path

    @staticmethod
    def _file_schema(keys, params, records, components, where) -> Schema:
        """The columns of one file when the experiment declared no schema: the standard columns,
        ``params``, the components (``components``, else every other record field that is not a
        known extra), every known extra, then the records' other fields (their type, float64 when
        every value is null)."""
        standard = _STANDARD | set(params)
        if components is not None:
            comps = [k for k in components if k not in standard]
        else:
            comps = [k for k in keys if k not in standard and k not in KNOWN_EXTRAS]
        extras = {}
        for k in keys:
            if k in standard or k in comps or k in KNOWN_EXTRAS:
                continue
            try:
                t = pa.array(_values(records, k)).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
                raise ValueError(f"{where}: column {k!r} has values that do not fit one type: {e}") from None
            extras[k] = pa.float64() if pa.types.is_null(t) else t
        return Schema(params, comps, extras)

    def summary_path(self, run_id: str) -> Path:
        """Where the run's summary is (written by the run when it has finished searching)."""
        return self.root / "runs" / f"{sanitise(run_id)}.json"

    def write_run_summary(self, run_id: str, summary: Mapping[str, Any]) -> Path:
        """Write ``summary`` (JSON-able values; numpy scalars/arrays are converted) as the run's
        summary, replacing any earlier one."""
        path = self.summary_path(run_id)
        text = json.dumps({"run_id": run_id, **summary}, default=_jsonable, indent=1)
        _atomic_write(path, lambda p: p.write_text(text))
        return path


@dataclass
class Results:
    evaluations: pd.DataFrame  # one row per evaluation, schema in the module docstring
    runs: pd.DataFrame         # summary(evaluations) merged with the summaries the runs wrote
    truth: dict | None = None  # synthetic targets' known parameters and the bounds (truth.json)
    bounds: dict | None = None  # the search bounds {name: [low, high]} (truth.json, else experiment.json)
    burn_in: float = 0.0  # simulation.burn_in (s) of experiment.json: charged to every fresh simulation
    covariates: pd.DataFrame | None = None  # cohort covariates by subject (covariates.tsv), None without

    @property
    def params(self) -> list[str]:
        return param_columns(self.evaluations)


def param_columns(df: pd.DataFrame) -> list[str]:
    """The parameter columns: those between ``dt`` and ``loss``."""
    cols = list(df.columns)
    return cols[cols.index("dt") + 1:cols.index("loss")]


def _roles(names: Sequence[str]) -> tuple[list, list, list]:
    """(params, components, extras) of one stored file, from its column positions."""
    names = list(names)
    i_dt, i_loss, i_valid, i_time = (names.index(c) for c in ("dt", "loss", "valid", "time"))
    return names[i_dt + 1:i_loss], names[i_loss + 1:i_valid], names[i_time + 1:]


_ORDER = {"gen": 0, "validation": 1, "test": 2, "profile": 3}


def _run_files(run_dir: Path) -> list[Path]:
    """A run's files, oldest data first: its compacted file, then training generations and rungs
    in order, then the held-out files."""
    gens = sorted(((_ORDER[m.group(1)], int(m.group(2)), int(m.group(3) or 0)), f) for f in run_dir.iterdir()
                  if (m := _GEN_FILE.match(f.name)))
    compacted = [run_dir / _COMPACTED] if (run_dir / _COMPACTED).is_file() else []
    return compacted + [f for _, f in gens]


def _read(files: Sequence[Path], threads: int) -> tuple[pd.DataFrame, tuple[list, list, list]]:
    """The stored rows of ``files`` (a (run, phase, generation, fidelity) found in several files is
    taken from the last one), in evaluation order; and the (params, components, extras) columns."""
    def read(f):
        try:
            return pq.ParquetFile(f).read()
        except (OSError, pa.ArrowException) as e:
            raise ValueError(f"{f}: cannot read this results file ({e})") from None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        tables = list(pool.map(read, files))
    roles = _union_roles(tuple(t.column_names) for t in tables)
    tables = [t.append_column("_src", pa.array(np.full(t.num_rows, k))) for k, t in enumerate(tables)]
    df = pa.concat_tables(tables, promote_options="permissive").to_pandas(
        types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    if "phase" not in df:
        df.insert(list(df.columns).index("mode") + 1, "phase", "train")
    df["phase"] = df["phase"].fillna("train")
    df = df[df["_src"] == df.groupby(_KEY)["_src"].transform("max")]
    df["_order"] = df["phase"].map({p: i for i, p in enumerate(PHASES)})
    df = df.sort_values(["run_id", "_order", "generation", "fidelity"], kind="stable")
    df = df.drop(columns=["_src", "_order"]).reset_index(drop=True)
    return df, roles


def _union_roles(schemas: Iterable[Sequence[str]]) -> tuple[list, list, list]:
    """(params, components, extras) over files with the column names ``schemas``, in order of
    first appearance; a column keeps the first role it was found in."""
    roles = ({}, {}, {})
    for names in dict.fromkeys(tuple(n) for n in schemas):
        for role, cols in zip(roles, _roles(names)):
            role.update(dict.fromkeys(cols))
    params = list(roles[0])
    comps = [c for c in roles[1] if c not in roles[0]]
    extras = [c for c in roles[2] if c not in roles[0] and c not in roles[1]]
    return params, comps, extras


def _run_dirs(root: Path) -> list[Path]:
    ev = root / "evaluations"
    return sorted(d for d in ev.iterdir() if d.is_dir()) if ev.is_dir() else []


def load(path: str | os.PathLike, threads: int = 8) -> Results:
    """Read an experiment's results (the ``root`` a :class:`ResultsWriter` wrote to) without Ray.

    Rows are sorted by run and evaluation order (training generations and their rungs, then the
    held-out phases); ``eval_index`` counts from 0 within each run, ``cum_sims`` adds up the
    simulations each evaluation started (``new_sims``; else ``repeats``; else 1: a rung that continued
    an earlier simulation starts none) and ``cum_wall_s`` adds up ``wall_s`` (simulator wall time)
    in that order."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root}: no such results directory")
    df = _evaluations([f for d in _run_dirs(root) for f in _run_files(d)], threads)
    written = []
    for f in sorted((root / "runs").glob("*.json")):
        try:
            written.append(json.loads(f.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from None
    truth = _read_truth(root)
    bounds = read_bounds(root, truth)
    runs = summary(df, bounds)
    burn_in = read_burn_in(root)
    if written:
        runs = runs.merge(pd.DataFrame(written), on="run_id", how="outer", suffixes=("", "_reported"))
    if truth and not runs.empty:
        runs["recovery_err"] = recovery_error(runs, truth)
    covariates = read_covariates(root)
    if covariates is not None:
        df, runs = _with_covariates(df, covariates), _with_covariates(runs, covariates)
    return Results(df, runs, truth, bounds, burn_in, covariates)


COVARIATES_FILE = "covariates.tsv"
_NA = ("n/a", "")


def read_covariates(root: str | os.PathLike) -> pd.DataFrame | None:
    """The covariates of a cohort (module docstring) from ``root/covariates.tsv`` (``root`` may
    also be the file itself): a DataFrame with a ``subject`` column (strings) and one column per
    covariate (float64 where every present value is a number, else strings; missing values NaN);
    None when there is no such file. Raises ValueError (message starting with the file's path) for
    a file without a ``subject`` column, an empty or repeated subject, or no rows."""
    p = Path(root)
    f = p if p.is_file() else p / COVARIATES_FILE
    if not f.is_file():
        return None
    try:
        df = pd.read_csv(f, sep="\t", dtype=str, keep_default_na=False, na_values=list(_NA))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{f}: not a tab-separated table ({str(e).splitlines()[0] if str(e) else e!r})") from None
    return _clean_covariates(df, str(f))


def _clean_covariates(df: pd.DataFrame, where: str) -> pd.DataFrame:
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    if "subject" not in df.columns and "participant_id" in df.columns:
        df = df.rename(columns={"participant_id": "subject"})
    if "subject" not in df.columns:
        raise ValueError(f"{where}: the first column must be 'subject' (the subject names of the results), "
                         f"found columns {list(df.columns)[:6]}")
    if df.empty:
        raise ValueError(f"{where}: no subject rows")
    subj = df["subject"]
    empty = subj.isna().to_numpy() | (subj.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise ValueError(f"{where}: data row {int(np.flatnonzero(empty)[0]) + 1} has no subject name")
    df["subject"] = subj.astype(str).str.strip()
    dup = df["subject"][df["subject"].duplicated()]
    if not dup.empty:
        raise ValueError(f"{where}: subject {dup.iloc[0]!r} appears more than once")
    cols = ["subject"] + [c for c in df.columns if c != "subject"]
    bad = [c for c in cols[1:] if not c or c.startswith("Unnamed:")]
    if bad:
        raise ValueError(f"{where}: a covariate column has no name")
    df = df[cols]
    for c in cols[1:]:
        s = df[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            df[c] = s.astype(float)
            continue
        s = s.where(s.isna(), s.astype(str).str.strip())
        s = s.mask(s.isin(_NA))
        num = pd.to_numeric(s, errors="coerce")
        df[c] = num.astype(float) if num.notna().sum() == s.notna().sum() else s.astype(object)
    return df.reset_index(drop=True)


def _with_covariates(df: pd.DataFrame, covariates: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the covariates of each row's ``subject`` appended (the fitted or held-out
    target; null for a target that is not a cohort subject, e.g. a group). A covariate whose name
    is already a column keeps the record's column and is not added."""
    cov = covariates[[c for c in covariates.columns if c == "subject" or c not in df.columns]]
    if len(cov.columns) == 1 or "subject" not in df.columns:
        return df
    out = df.merge(cov, on="subject", how="left", sort=False)
    out.index = df.index
    return out


def _evaluations(files: Sequence[Path], threads: int = 8) -> pd.DataFrame:
    """The evaluations stored in ``files``, with the derived columns (see :func:`load`)."""
    if not files:
        return pd.DataFrame(columns=list(HEAD) + ["loss"] + list(TAIL))
    df, (params, comps, extras) = _read(files, threads)
    df["eval_index"] = df.groupby("run_id", sort=False).cumcount()
    sims = df["repeats"].fillna(1) if "repeats" in df else pd.Series(1, index=df.index)
    if "new_sims" in df:
        sims = df["new_sims"].astype("Float64").fillna(sims.astype("Float64"))
    df["cum_sims"] = sims.astype("int64").groupby(df["run_id"]).cumsum()
    df["cum_wall_s"] = df["wall_s"].fillna(0.0).groupby(df["run_id"]).cumsum()
    for c in TAIL:  # a column added since older results were written (e.g. compile_s): null there
        if c not in df:
            df[c] = pd.Series(np.nan, index=df.index, dtype="float64")
    for c in _KEPT_EXTRAS:  # kept even where no file has them (results written before they existed)
        if c not in df:
            df[c] = pd.Series(np.nan, index=df.index, dtype="str" if _TYPES[c] == pa.string() else "float64")
            extras = list(extras) + [c]
    extras = [c for c in KNOWN_EXTRAS if c in extras] + [c for c in extras if c not in KNOWN_EXTRAS]
    # every file stores every known extra; one that no record carried stays out of the frame
    extras = [c for c in extras if c not in KNOWN_EXTRAS or c in _KEPT_EXTRAS or df[c].notna().any()]
    return df[list(HEAD) + params + ["loss"] + comps + list(TAIL) + extras]


def load_run(path: str | os.PathLike, run_id: str, threads: int = 4) -> pd.DataFrame:
    """The evaluations of one run (as :func:`load` gives them; empty when it wrote none)."""
    d = Path(path) / "evaluations" / sanitise(run_id)
    return _evaluations(_run_files(d) if d.is_dir() else [], threads)


def read_burn_in(root: str | os.PathLike) -> float:
    """``simulation.burn_in`` (s) of the experiment in ``root`` (``experiment.json``); 0 when it
    is not there or not readable (then only recorded seconds are counted as simulated)."""
    try:
        return float(json.loads((Path(root) / "experiment.json").read_text())["simulation"].get("burn_in", 0.0))
    except Exception:  # noqa: BLE001 - an old or edited experiment.json: count recorded seconds only
        return 0.0


def read_bounds(root: str | os.PathLike, truth: Mapping[str, Any] | None = None) -> dict | None:
    """The search bounds ``{name: [low, high]}`` of the experiment in ``root``: those saved with
    the truth (``truth.json``), else the parametrisation's in ``experiment.json`` (that of the
    first fitted target; a regional parametrisation's names are the union over targets); None when
    neither is there or readable (bounds only add flags)."""
    if truth and truth.get("bounds"):
        return dict(truth["bounds"])
    f = Path(root) / "experiment.json"
    if not f.is_file():
        return None
    try:
        from .experiment import ExperimentConfig

        cfg = ExperimentConfig.model_validate(json.loads(f.read_text()))
        out = {}
        if cfg.parametrisation.kind in ("regional", "maps"):  # names or bounds may depend on the target
            pars = (cfg.build_parametrisation(t) for t in dict.fromkeys(cfg.targets()))
        else:
            pars = [cfg.parametrisation.build(cfg.build_model())]
        for par in pars:
            out.update({n: [float(lo), float(hi)] for n, (lo, hi) in zip(par.names, par.bounds) if n not in out})
            if cfg.parametrisation.kind != "regional":
                break
        return out or None
    except Exception:  # an old or edited experiment.json: no flags rather than no results
        return None


def _read_truth(root: Path) -> dict | None:
    f = root / "truth.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: not valid JSON ({e})") from None


def recovery_error(runs: pd.DataFrame, truth: Mapping[str, Any]) -> pd.Series:
    r"""Parameter recovery of each run on a synthetic target (Griffiths et al. 2022): the RMS over
    parameters of the best training candidate's distance to the true value, in units of the search
    range, :math:`\sqrt{\tfrac1P \sum_j ((\hat\theta_j - \theta_j^*) / (u_j - l_j))^2}`
    (0: exact, ~0.4: no better than a random point). NaN for runs on other targets."""
    bounds = truth.get("bounds", {})
    out = pd.Series(np.nan, index=runs.index, dtype=float)
    for subject, params in truth.get("params", {}).items():
        rows = runs["subject"] == subject
        if not rows.any():
            continue
        names = [n for n in params if n in runs.columns and n in bounds]
        if not names:
            continue
        est = runs.loc[rows, names].astype(float).to_numpy()
        true = np.array([params[n] for n in names], dtype=float)
        width = np.array([bounds[n][1] - bounds[n][0] for n in names], dtype=float)
        out[rows] = np.sqrt(np.mean(((est - true) / width) ** 2, axis=1))
    return out


def _stamp(f: Path) -> tuple[int, int]:
    st = f.stat()
    return st.st_ino, st.st_mtime_ns  # os.replace gives a rewritten file a new inode


def compact(path: str | os.PathLike) -> int:
    """Merge each run's generation files into one ``compacted.parquet`` (written atomically) and
    delete the generation files it holds, so that loading a large study opens one file per run
    rather than one per generation (~1 ms each). Returns the number of files deleted.

    Every compacted file gets one schema: the declared one (``schema.json``) together with every
    column found in the experiment's files, so compacting also brings results written before
    schemas were declared (or by an older raybrain) to one schema that any parquet reader takes
    whole (a run whose compacted file already has it is left alone).

    Safe while runs are still writing: a generation written after compaction is newer and wins at
    :func:`load`; a generation file that changed while being compacted is kept. Run one ``compact``
    at a time per storage path."""
    root = Path(path)
    runs = {d: _run_files(d) for d in _run_dirs(root)}
    runs = {d: files for d, files in runs.items() if files}
    if not runs:
        return 0
    found = _schema_of([f for files in runs.values() for f in files])
    declared = read_schema(root)
    schema = found if declared is None else declared.union(found)
    target = schema.arrow()
    removed = 0
    for run_dir, files in runs.items():
        gens = [f for f in files if f.name != _COMPACTED]
        if not gens and _parquet_schema(files[0]).equals(target):
            continue
        stamps = {f: _stamp(f) for f in gens}
        df, _ = _read(files, threads=1)
        df = df.reindex(columns=schema.columns)
        table = pa.Table.from_pandas(df, schema=target, preserve_index=False).replace_schema_metadata(None)
        _atomic_write(run_dir / _COMPACTED, lambda p: pq.write_table(table, p))
        for f, ns in stamps.items():
            if _stamp(f) == ns:
                f.unlink()
                removed += 1
    return removed


def _parquet_schema(f: Path) -> pa.Schema:
    try:
        return pq.read_schema(f).remove_metadata()
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"{f}: cannot read this results file ({e})") from None


def _schema_of(files: Sequence[Path]) -> Schema:
    """The :class:`Schema` of every column found in ``files`` (an extra's type: the first non-null
    type it has)."""
    schemas = [_parquet_schema(f) for f in files]
    params, comps, extras = _union_roles(s.names for s in schemas)
    types = {}
    for s in schemas:
        for c in extras:
            i = s.get_field_index(c)
            if i >= 0 and (c not in types or pa.types.is_null(types[c])):
                types[c] = s.field(i).type
    return Schema(params, comps, {c: (pa.float64() if pa.types.is_null(t) else t) for c, t in types.items()})


def _train(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["phase"] == "train"] if "phase" in df else df


def _top_fidelity(df: pd.DataFrame) -> pd.DataFrame:
    """Training rows at the highest fidelity of their experiment (the only ones whose losses compare)."""
    df = _train(df)
    return df[df["fidelity"] == df.groupby("experiment")["fidelity"].transform("max")]


def holdout(df: pd.DataFrame) -> pd.DataFrame:
    """Per run, the held-out phases: ``val_loss`` (the lowest, over the re-simulated candidates, of
    a candidate's loss averaged over the validation targets), ``val_se`` (its standard error over
    the fresh-noise repeats: sqrt(Σ loss_se²) / n_targets, the targets' noise being independent;
    NaN when a record has no ``loss_se``, i.e. one repeat), ``winner_eval`` (that candidate's
    training ``eval_index``), ``test_loss`` and ``test_se`` (the winner's loss averaged over the
    test targets, and its standard error). Empty when no run has a validation phase."""
    cols = ["run_id", "val_loss", "val_se", "winner_eval", "test_loss", "test_se"]
    if "phase" not in df or "source_eval" not in df:
        return pd.DataFrame(columns=cols)
    val = df[df["phase"] == "validation"]
    if val.empty:
        return pd.DataFrame(columns=cols)

    def mean_se(rows, by):
        se = (rows["loss_se"] if "loss_se" in rows else pd.Series(np.nan, index=rows.index)).astype(float)
        g = rows.assign(_v=se ** 2).groupby(by, sort=True)
        out = g["loss"].mean().to_frame("loss")
        n = g.size()
        # NaN when any target lacks an error (min_count: an all-NaN sum is NaN, not 0)
        out["se"] = np.sqrt(g["_v"].sum(min_count=1)) / n
        out.loc[g["_v"].apply(lambda v: v.isna().any()), "se"] = np.nan
        return out

    per = mean_se(val, ["run_id", "source_eval"]).reset_index()
    win = per.sort_values(["run_id", "loss", "source_eval"], kind="stable").groupby("run_id").head(1)
    out = win.rename(columns={"loss": "val_loss", "se": "val_se", "source_eval": "winner_eval"}).set_index("run_id")
    test = df[df["phase"] == "test"]
    if test.empty:
        out["test_loss"], out["test_se"] = np.nan, np.nan
    else:
        t = mean_se(test, ["run_id"])
        out["test_loss"], out["test_se"] = t["loss"].reindex(out.index), t["se"].reindex(out.index)
    out["winner_eval"] = out["winner_eval"].astype("int64")
    return out.reset_index()[cols]


#: a fitted value within this fraction of its search range's width from a bound is "at the bound"
BOUND_FRACTION = 0.02


def at_bound(values: Mapping[str, float], bounds: Mapping[str, Sequence[float]] | None,
             fraction: float = BOUND_FRACTION) -> str | None:
    """The parameters of ``values`` that lie within ``fraction`` of their search range's width from
    a bound, as ``"G:upper, sigma:lower"`` ("" when none); None when ``bounds`` is unknown. A fit
    there is one the search range cut short: the best value may lie beyond it, or the model stops
    being valid there (e.g. FIC's stable range), which the report should say rather than rank."""
    if not bounds:
        return None
    flags = []
    for n, v in values.items():
        if n not in bounds or v is None or not np.isfinite(float(v)):
            continue
        lo, hi = (float(x) for x in bounds[n])
        tol = fraction * (hi - lo)
        if float(v) >= hi - tol:
            flags.append(f"{n}:upper")
        elif float(v) <= lo + tol:
            flags.append(f"{n}:lower")
    return ", ".join(flags)


def best(df: pd.DataFrame, by: str | Iterable[str] = ("subject", "optimizer")) -> pd.DataFrame:
    """The best evaluation (lowest loss at the top fidelity; the earliest on ties) of each group of
    ``by``, as full rows sorted by ``by``. Groups with no finite loss are left out."""
    by = [by] if isinstance(by, str) else list(by)
    top = _top_fidelity(df)
    top = top[np.isfinite(top["loss"].astype(float))]
    rows = top.sort_values("loss", kind="stable").groupby(by, sort=True).head(1)
    return rows.sort_values(by, kind="stable").reset_index(drop=True)


def summary(df: pd.DataFrame, bounds: Mapping[str, Sequence[float]] | None = None,
            fraction: float = BOUND_FRACTION) -> pd.DataFrame:
    """One row per run: who it was (``subject`` is the fitted target), how much it cost
    (``n_evals`` training evaluations; ``n_sims``, ``wall_s`` over every phase), its best training
    evaluation (``best_loss``, ``best_eval``, then the parameters of that evaluation) and, where
    the run has held-out phases, ``val_loss``, ``val_se``, ``winner_eval``, ``test_loss``,
    ``test_se`` (:func:`holdout`). Given the search ``bounds`` ({name: (low, high)}),
    ``at_bound``: the parameters of the run's fit (the validated winner, else the best training
    evaluation) within ``fraction`` of a bound (:func:`at_bound`)."""
    ids = ["experiment", "run_id", "mode", "subject", "optimizer", "seed"]
    params = param_columns(df)
    cols = ids + ["n_evals", "n_sims", "wall_s", "best_loss", "best_eval"] + params
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = df.groupby("run_id", sort=True)
    out = _train(df).groupby("run_id", sort=True)[ids[:1] + ids[2:]].first().join(
        pd.DataFrame({"n_evals": _train(df).groupby("run_id").size(), "n_sims": g["cum_sims"].max(),
                      "wall_s": g["cum_wall_s"].max()}))
    b = best(df, by="run_id").set_index("run_id")
    b = b[["loss", "eval_index"] + params].rename(columns={"loss": "best_loss", "eval_index": "best_eval"})
    out = out.join(b).reset_index()[cols]
    h = holdout(df)
    if not h.empty:
        out = out.merge(h, on="run_id", how="left")
    if bounds:
        fit = out.set_index("run_id")[params].astype(float)
        if not h.empty:  # the validated winner's parameters replace the best training fit's
            tr = _train(df)
            win = tr.merge(h[["run_id", "winner_eval"]], left_on=["run_id", "eval_index"],
                           right_on=["run_id", "winner_eval"]).set_index("run_id")[params].astype(float)
            fit.update(win)
        out["at_bound"] = [at_bound(fit.loc[r].to_dict(), bounds, fraction) if fit.loc[r].notna().any() else None
                           for r in out["run_id"]]
    return out


def analyze(df: pd.DataFrame, tol: float = 0.05, truth: Mapping[str, Any] | None = None,
            bounds: Mapping[str, Sequence[float]] | None = None, fraction: float = BOUND_FRACTION) -> pd.DataFrame:
    """Per subject × optimizer, over seeds (runs):

    - ``best_mean``, ``best_sd``: mean and sample sd (ddof=1) of each run's best loss;
    - ``n_seeds``; ``reached``: runs that came within ``tol`` of the subject's target, where the
      target is the best loss found by *any* optimizer on that subject, L*, and "within" means
      loss <= L* + tol·|L*|;
    - ``sims_to_target``, ``wall_s_to_target``: median over runs of ``cum_sims`` / ``cum_wall_s``
      at a run's first evaluation within the target (inf for a run that never got there);
    - where runs have held-out phases (:func:`holdout`): ``val_mean`` and ``test_mean``, the mean
      over runs of the winner's validation and test losses (fresh noise: free of the optimism of
      a best-of-many training loss), and ``val_se``, the standard error of ``val_mean``: over
      seeds, sd / sqrt(n_seeds) (which holds the noise too); for a single seed, that run's noise
      standard error (``val_se`` of :func:`holdout`);
    - given the search ``bounds``: ``at_bound``, per parameter and side, how many of the runs'
      fits lie within ``fraction`` of a bound (:func:`at_bound` of :func:`summary`'s rows), e.g.
      ``"G:upper 3/3"``; "" when none;
    - given ``truth`` (:attr:`Results.truth`, synthetic targets): ``recovery``, the mean over runs
      of :func:`recovery_error` of each run's best candidate.
    Rows are sorted by subject, then best_mean."""
    cols = ["subject", "optimizer", "n_seeds", "best_mean", "best_sd", "reached", "sims_to_target",
            "wall_s_to_target"]
    top = _top_fidelity(df).sort_values(["run_id", "eval_index"], kind="stable")
    top = top[np.isfinite(top["loss"].astype(float))]
    if top.empty:
        return pd.DataFrame(columns=cols)
    target = top.groupby("subject")["loss"].min()
    threshold = top["subject"].map(target + tol * target.abs())
    hits = top[top["loss"] <= threshold].groupby("run_id", sort=False).head(1).set_index("run_id")
    runs = top.groupby("run_id").agg(subject=("subject", "first"), optimizer=("optimizer", "first"),
                                     seed=("seed", "first"), best=("loss", "min"))
    runs["sims"] = hits["cum_sims"].reindex(runs.index).astype(float).fillna(np.inf)
    runs["wall"] = hits["cum_wall_s"].reindex(runs.index).astype(float).fillna(np.inf)
    runs["reached"] = np.isfinite(runs["sims"]).astype(int)
    g = runs.groupby(["subject", "optimizer"])
    out = pd.DataFrame({"n_seeds": g["seed"].nunique(), "best_mean": g["best"].mean(),
                        "best_sd": g["best"].std(ddof=1), "reached": g["reached"].sum(),
                        "sims_to_target": g["sims"].median(), "wall_s_to_target": g["wall"].median()})
    h = holdout(df).set_index("run_id")
    if not h.empty:
        runs = runs.join(h[["val_loss", "val_se", "test_loss"]])
        g = runs.groupby(["subject", "optimizer"])
        for col, src in (("val_mean", "val_loss"), ("test_mean", "test_loss")):
            if runs[src].notna().any():
                out[col] = g[src].mean()
                cols.append(col)
            if col == "val_mean" and runs[src].notna().any():
                n = g[src].count()
                out["val_se"] = (g[src].std(ddof=1) / np.sqrt(n)).where(n > 1, g["val_se"].first())
                cols.append("val_se")
    if bounds:
        flags = summary(df, bounds, fraction).set_index("run_id")["at_bound"]
        runs["at_bound"] = flags.reindex(runs.index)

        def count(v):
            tags = [t for f in v.dropna() for t in f.split(", ") if t]
            return ", ".join(f"{t} {tags.count(t)}/{len(v)}" for t in dict.fromkeys(tags))

        out["at_bound"] = runs.groupby(["subject", "optimizer"])["at_bound"].agg(count)
        cols.append("at_bound")
    if truth:
        b = best(df, by="run_id").set_index("run_id")
        runs["recovery"] = recovery_error(b, truth).reindex(runs.index)
        if runs["recovery"].notna().any():
            out["recovery"] = runs.groupby(["subject", "optimizer"])["recovery"].mean()
            cols.append("recovery")
    out = out.reset_index().sort_values(["subject", "best_mean"], kind="stable").reset_index(drop=True)[cols]
    out.attrs["tol"] = tol
    return out


# ---------------------------------------------------------------------------------------- display

_HEADERS = {"n_seeds": "seeds", "best": "best loss", "reached": "reached", "sims_to_target": "sims→{tol}",
            "wall_s_to_target": "wall→{tol}", "n_evals": "evals", "n_sims": "sims", "best_loss": "best loss",
            "best_eval": "at", "val_mean": "val loss", "test_mean": "test loss", "val": "val loss ± se",
            "at_bound": "at bound"}


def _fmt_seconds(s: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.1f}s" if s >= 1 else f"{s * 1e3:.0f}ms"


def _fmt(x, column: str) -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if math.isinf(x):
            return "never" if column.endswith("_to_target") else ("inf" if x > 0 else "-inf")
        if "wall" in column:
            return _fmt_seconds(float(x))
        if float(x).is_integer() and abs(x) < 1e9:
            return str(int(x))
        return f"{x:.4g}"
    return str(x)


def _shorten(text: str, width: int, head: int) -> str:
    """``text`` cut to ``width`` characters: its first ``head``, "…", then its end."""
    if len(text) <= width:
        return text
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def _abbreviate(values: list[str], width: int) -> list[str]:
    """Cut ``values`` to ``width`` with an ellipsis placed where it keeps the most values apart
    (subject ids differ at the end, optimizer labels often at the start); centred on ties."""
    if all(len(v) <= width for v in values):
        return values
    best, n_best, n_max = values, -1, len(set(values))
    for head in sorted(range(width), key=lambda h: abs(h - width // 2)):
        out = [_shorten(v, width, head) for v in values]
        if len(set(out)) > n_best:
            best, n_best = out, len(set(out))
            if n_best == n_max:
                break
    return best


def format_table(df: pd.DataFrame, width: int = 80, min_text: int = 8) -> str:
    """A plain-text table of ``df`` (e.g. :func:`analyze`'s) that fits ``width`` characters.

    ``best_mean``/``best_sd`` become one "mean ± sd" column, ``val_mean``/``val_se`` one
    "mean ± se" column; numbers get 4 significant digits,
    wall times a unit, never-reached targets "never"; a repeated first column is blanked. When too
    wide, the columns wrap into blocks that each repeat the leading text columns (up to 3, the row
    keys); text is shortened (an ellipsis placed to keep values apart, down to ``min_text``) where
    the keys would take more than half the width or the keys plus one other column would not fit."""
    df = df.copy()
    if {"best_mean", "best_sd"} <= set(df.columns):
        df.insert(list(df.columns).index("best_mean"), "best", [
            _fmt(m, "best_mean") + ("" if pd.isna(s) else f" ± {s:.2g}")
            for m, s in zip(df["best_mean"], df["best_sd"])])
        df = df.drop(columns=["best_mean", "best_sd"])
    if {"val_mean", "val_se"} <= set(df.columns):  # validated loss ± its standard error
        df.insert(list(df.columns).index("val_mean"), "val", [
            _fmt(m, "val_mean") + ("" if pd.isna(e) else f" ± {e:.2g}") for m, e in zip(df["val_mean"], df["val_se"])])
        df = df.drop(columns=["val_mean", "val_se"])
    names = list(df.columns)
    if not names:
        return ""
    tol = f"{df.attrs.get('tol', 0.05):.0%}"
    headers = [_HEADERS.get(c, c).format(tol=tol) for c in names]
    cells = [[_fmt(v, c) for v in df[c].tolist()] for c in names]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) or c in ("best", "val") for c in names]
    if cells[0] and not numeric[0]:  # blank repeats of the grouping column
        cells[0] = [v if i == 0 or v != cells[0][i - 1] else "" for i, v in enumerate(cells[0])]
    widths = [max([len(h)] + [len(v) for v in col]) for h, col in zip(headers, cells)]

    def total(idx):
        return sum(widths[i] for i in idx) + 2 * (len(idx) - 1)

    keys = []  # up to 3 leading text columns identify a row in every block
    while len(keys) < min(3, len(names) - 1) and not numeric[len(keys)]:
        keys.append(len(keys))
    rest = [i for i in range(len(names)) if i not in keys]

    def narrowest_block():  # the keys plus the widest other column
        return max(total(keys + [j]) for j in rest) if rest else total(keys)

    while narrowest_block() > width or total(keys) > width // 2:
        text = [i for i in range(len(names)) if not numeric[i] and widths[i] > min_text]
        if not text:
            break
        widths[max(text, key=lambda j: widths[j])] -= 1
    for i in range(len(names)):
        headers[i] = _shorten(headers[i], widths[i], widths[i] // 2)
        cells[i] = _abbreviate(cells[i], widths[i])
    blocks, block = [], list(keys)
    for i in rest:
        if len(block) > len(keys) and total(block + [i]) > width:
            blocks.append(block)
            block = list(keys)
        block.append(i)
    blocks.append(block)

    def line(idx, values):
        return "  ".join(v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i])
                         for i, v in zip(idx, values)).rstrip()

    parts = []
    for idx in blocks:
        rows = [line(idx, [headers[i] for i in idx]), line(idx, ["-" * widths[i] for i in idx])]
        rows += [line(idx, [cells[i][r] for i in idx]) for r in range(len(df))]
        parts.append("\n".join(rows))
    return "\n\n".join(parts)
