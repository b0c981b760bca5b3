"""Cohorts: one declaration finds every subject's files, TR and covariates.

A cohort is a BIDS-style ``participants.tsv`` (one row per subject, first column
``participant_id`` such as ``"sub-001"``, then covariates) plus *path patterns* that say where each
subject's files are, relative to ``base_dir``::

    spec = CohortSpec(
        participants="ds/participants.tsv",
        sc="sub-{sub}/dwi/sub-{sub}_seg-{atlas}_connectome.csv",
        bold="sub-{sub}/func/sub-{sub}_task-rest_run-*_seg-{atlas}_stat-mean_timeseries.tsv",
        tr="sidecar",
        atlas="atlas-{atlas}_dseg.tsv",
        subset="age >= 18 and group == 'control'",
    )
    cohort = resolve(spec)          # finds and checks every file; all problems in one error
    cohort.preflight()              # loads every subject once (cheap) and collects all failures
    s = cohort.load_subject("sub-001")

Patterns are Python format strings. Their fields are the participants row: ``{participant_id}``
(``"sub-001"``), ``{sub}`` (the label without ``"sub-"``, ``"001"``) and any other column
(``{atlas}``, ``{site}``, ...), substituted as the text written in the table. Glob wildcards
(``*``, ``?``, ``[...]``) written in the pattern itself are allowed: several matches of ``bold`` are
the subject's runs, in natural order (``run-2`` before ``run-10``); several matches of ``sc``,
``lengths``, ``atlas`` or an explicit ``sidecar`` are an error for that subject.

TR (seconds) comes from a number, a participants column (``{"column": "tr"}``) or the BOLD
JSON sidecars (``"sidecar"``, ``RepetitionTime``); all runs of a subject must agree.

The default sidecar rule (BIDS inheritance principle, BIDS 1.9 "Common principles"): a BOLD path's
*acquisition entities* are the BIDS entities of raw data (``sub ses task acq ce rec dir run echo
part``) found in its file name; derivative entities (``seg``, ``stat``, ``desc``, ``space``, ``atlas``,
...) and the suffix are dropped. So the time series
``sub-01_task-rest_run-1_seg-X_stat-mean_timeseries.tsv`` belongs to the scan
``sub-01_task-rest_run-1_bold``. Every ``*_bold.json`` in the time series' directory and in each
parent directory up to ``base_dir`` whose entities are a subset (same values) of those acquisition
entities applies -- e.g. ``sub-01_task-rest_run-1_bold.json`` next to the file, or
``task-rest_bold.json`` at the root -- and so does a JSON with the time series' own name
(``..._timeseries.json``). They are merged from the least specific (top directory, fewest entities)
to the most specific, which wins. An explicit ``sidecar`` pattern may also use the BOLD name's
entities as fields (``{task}``, ``{run}``, ``{ses}``, ...), e.g.
``"../rawdata/sub-{sub}/func/sub-{sub}_task-{task}_run-{run}_bold.json"``.

Every problem of every subject is collected: ``on_missing="error"`` raises one :class:`CohortError`
listing them all, one line each (``sub-007: sub-007/dwi/sub-007_seg-AAL_connectome.csv: no such
file``); ``on_missing="skip"`` drops the broken subjects, lists them in ``Cohort.skipped`` and warns.
"""
from __future__ import annotations

import glob as _glob
import json
import math
import os
import re
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "CohortSpec",
    "CohortEntry",
    "Cohort",
    "CohortError",
    "resolve",
    "read_participants",
    "natural_key",
    "bids_entities",
    "ACQUISITION_ENTITIES",
]

#: Missing-value spellings in a participants table (BIDS writes "n/a").
NA_VALUES = ("n/a", "N/A", "NA", "nan", "NaN", "")
#: BIDS entities that identify a raw acquisition (the ones a raw ``*_bold.json`` sidecar may carry).
ACQUISITION_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part")
_RUNS = ("pool", "concatenate", "first")
_ON_MISSING = ("error", "skip")
_NA = ("error", "drop-frames", "drop-regions")
_RESERVED = ("participant_id", "sub")

Problem = tuple  # (subject: str, path: str, problem: str)


class CohortError(ValueError):
    """Every problem found in a cohort, in one error.

    ``problems`` is a list of ``(subject, path, problem)``; the message lists them one a line as
    ``"<subject>: <path>: <problem>"``.
    """

    def __init__(self, header: str, problems: Sequence[Problem]):
        self.problems = [tuple(p) for p in problems]
        lines = [header] + [_problem_line(p) for p in self.problems]
        super().__init__("\n".join(lines))


def _problem_line(p: Problem) -> str:
    subject, path, problem = p
    return ": ".join(str(x) for x in (subject, path, problem) if x not in (None, ""))


# ------------------------------------------------------------------ small helpers
def natural_key(s: str) -> tuple:
    """Sort key that orders digit runs by value: ``run-2`` before ``run-10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(s)) if t != "")


def bids_entities(name: str) -> tuple[dict[str, str], str | None]:
    """The ``key-value`` entities of a BIDS file name (in order) and its suffix.

    ``"sub-01_task-rest_run-1_seg-X_stat-mean_timeseries.tsv"`` ->
    ``({"sub": "01", "task": "rest", "run": "1", "seg": "X", "stat": "mean"}, "timeseries")``.
    """
    base = os.path.basename(str(name)).split(".", 1)[0]
    ents: dict[str, str] = {}
    suffix = None
    for part in base.split("_"):
        if "-" in part:
            k, v = part.split("-", 1)
            ents[k] = v
        elif part:
            suffix = part
    return ents, suffix


def _sub_label(pid: str) -> str:
    return pid[4:] if pid.startswith("sub-") else pid


def _pattern_fields(pattern: str, what: str) -> list[str]:
    names = []
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"cohort.{what}: pattern {pattern!r} is not a valid format string ({exc})") from None
    for _lit, fname, _spec, _conv in parsed:
        if fname is None:
            continue
        if fname == "" or fname.isdigit():
            raise ValueError(f"cohort.{what}: pattern {pattern!r} has a positional field {{}}; name a column, "
                             f"e.g. {{participant_id}} or {{sub}}")
        names.append(fname)
    return names


def _has_magic_literal(pattern: str) -> bool:
    """Glob wildcards in the literal (user-written) parts of a pattern, not in substituted values."""
    return any(_glob.has_magic(lit) for lit, *_ in string.Formatter().parse(pattern))


def _expand(pattern: str, values: Mapping[str, str]) -> tuple[str, bool]:
    """Format ``pattern``; returns (path string, is_glob). Substituted values are glob-escaped."""
    if _has_magic_literal(pattern):
        return pattern.format_map({k: _glob.escape(v) if isinstance(v, str) else v for k, v in values.items()}), True
    return pattern.format_map(values), False


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x


# ------------------------------------------------------------------ spec
@dataclass(frozen=True)
class CohortSpec:
    """Where a cohort's files are and how to read them (see the module docstring).

    Parameters
    ----------
    participants : path
        ``participants.tsv`` (tab-separated) or ``.csv``; ``"n/a"`` cells are missing.
    sc : str
        Pattern of each subject's structural connectome (one file per subject).
    bold : str or None
        Pattern of the regional BOLD time series; several matches are the subject's runs.
    lengths : str or None
        Pattern of the fibre-length matrix (one file per subject).
    base_dir : path or None
        Relative patterns are relative to it; default the participants file's directory.
    id_column : str
        Subject id column (``"participant_id"``); ids are unique and become the subject names.
    tr : float, ``{"column": name}``, ``"sidecar"`` or None
        Repetition time (s). None: ``"sidecar"`` with BOLD, the loader's default without BOLD.
    sidecar : str or None
        Pattern of the JSON sidecar of each BOLD run (fields: the row's and the BOLD name's
        entities); None: the BIDS inheritance rule of the module docstring.
    runs : ``"pool"``, ``"concatenate"`` or ``"first"``
        Several runs: pool their features, concatenate their (z-scored) series, or keep the first.
    subset : str or None
        A ``pandas.DataFrame.query`` on the participants table, e.g. ``"age >= 18 and sex == 'F'"``.
    include, exclude : sequence of ids or None
        Keep only / drop these ids (``"sub-001"`` or ``"001"``).
    covariates : sequence of column names or None
        Columns carried with each subject; None: every column but the id.
    on_missing : ``"error"`` or ``"skip"``
        Broken subjects raise one error listing every problem, or are dropped and listed.
    na : ``"error"``, ``"drop-frames"`` or ``"drop-regions"``
        Policy for ``n/a`` cells in time series (passed to the loader).
    sc_key, bold_key, lengths_key : str or None
        Variable names in ``.mat``/``.npz`` files.
    atlas : str or None
        Pattern of a dseg-style TSV (``index, name, x, y, z``) giving region labels and centres.
    min_frames : int or None
        Preflight reports a subject whose (shortest) BOLD run is shorter than this.
    """

    participants: str | os.PathLike
    sc: str
    bold: str | None = None
    lengths: str | None = None
    base_dir: str | os.PathLike | None = None
    id_column: str = "participant_id"
    tr: Any = None
    sidecar: str | None = None
    runs: str = "pool"
    subset: str | None = None
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    covariates: tuple[str, ...] | None = None
    on_missing: str = "error"
    na: str = "error"
    sc_key: str | None = None
    bold_key: str | None = None
    lengths_key: str | None = None
    atlas: str | None = None
    min_frames: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("include", "exclude", "covariates"):
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, str):
                    v = (v,)
                set_(self, name, tuple(str(x) for x in v))
        for name in ("sc", "bold", "lengths", "sidecar", "atlas"):
            v = getattr(self, name)
            if v is not None:
                if not isinstance(v, (str, os.PathLike)) or not str(v).strip():
                    raise ValueError(f"cohort.{name}: expected a path pattern (a non-empty string), got {v!r}")
                set_(self, name, os.fspath(v))
                _pattern_fields(getattr(self, name), name)
        if self.runs not in _RUNS:
            raise ValueError(f"cohort.runs: expected one of {', '.join(_RUNS)}, got {self.runs!r}")
        if self.on_missing not in _ON_MISSING:
            raise ValueError(f"cohort.on_missing: expected one of {', '.join(_ON_MISSING)}, got {self.on_missing!r}")
        if self.na not in _NA:
            raise ValueError(f"cohort.na: expected one of {', '.join(_NA)}, got {self.na!r}")
        tr = self.tr
        if isinstance(tr, Mapping):
            if set(tr) != {"column"} or not isinstance(tr["column"], str) or not tr["column"]:
                raise ValueError(f"cohort.tr: a TR column is given as {{'column': <name>}}, got {dict(tr)!r}")
            set_(self, "tr", {"column": tr["column"]})
        elif isinstance(tr, str):
            if tr != "sidecar":
                raise ValueError(f"cohort.tr: expected seconds, {{'column': <name>}} or 'sidecar', got {tr!r}")
            if self.bold is None:
                raise ValueError("cohort.tr: 'sidecar' needs a bold pattern (the sidecars belong to the BOLD runs)")
        elif tr is not None:
            x = None if isinstance(tr, bool) else _num(tr)
            if x is None or not math.isfinite(x) or x <= 0:
                raise ValueError(f"cohort.tr: TR must be a positive number of seconds, got {tr!r}")
            set_(self, "tr", x)
        if self.sidecar is not None and self.tr != "sidecar" and not (self.tr is None and self.bold):
            raise ValueError("cohort.sidecar: a sidecar pattern is only used with tr='sidecar'")
        if self.min_frames is not None and (isinstance(self.min_frames, bool) or int(self.min_frames) < 1):
            raise ValueError(f"cohort.min_frames: expected a positive number of frames, got {self.min_frames!r}")
        if self.subset is not None and not str(self.subset).strip():
            raise ValueError("cohort.subset: empty query")

    @property
    def tr_mode(self) -> str:
        """``"fixed"``, ``"column"``, ``"sidecar"`` or ``"default"`` (no BOLD, no TR)."""
        if isinstance(self.tr, dict):
            return "column"
        if self.tr == "sidecar" or (self.tr is None and self.bold is not None):
            return "sidecar"
        return "default" if self.tr is None else "fixed"

    @property
    def participants_path(self) -> Path:
        return Path(os.fspath(self.participants)).expanduser()

    @property
    def root(self) -> Path:
        """The directory relative patterns start from."""
        if self.base_dir is not None:
            return Path(os.fspath(self.base_dir)).expanduser()
        return self.participants_path.parent


# ------------------------------------------------------------------ participants table
def read_participants(path, id_column: str = "participant_id"):
    """Read a participants table: ``(raw, typed)`` DataFrames in file order.

    ``raw`` holds every cell as written (str; missing cells ``None``) -- used to fill patterns;
    ``typed`` has one column per table column, numbers as float64 and everything else as pandas
    strings, missing values as NaN/NA. The id column is stripped, must be present, non-empty and
    unique (duplicates are one error naming every repeated id with its line numbers).
    """
    import pandas as pd

    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise ValueError(f"{p}: no such file (the participants table)")
    if not p.is_file():
        raise ValueError(f"{p}: not a regular file (the participants table)")
    suffix = p.suffix.lower()
    if suffix == ".tsv":
        sep = "\t"
    elif suffix == ".csv":
        sep = ","
    else:
        raise ValueError(f"{p}: participants table must be .tsv (tab-separated) or .csv, got {suffix or 'no suffix'}")
    try:
        df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, na_filter=False)
    except Exception as exc:  # noqa: BLE001 - parser errors of every kind become one clear message
        raise ValueError(f"{p}: cannot read the participants table ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if id_column not in df.columns:
        hint = " (is it tab-separated?)" if len(df.columns) == 1 and sep == "\t" and "," in df.columns[0] else ""
        raise ValueError(f"{p}: no column {id_column!r}{hint}; columns: {', '.join(df.columns)}")
    dup_cols = [c for c in set(df.columns) if list(df.columns).count(c) > 1]
    if dup_cols:
        raise ValueError(f"{p}: duplicate column names {sorted(dup_cols)}")
    raw = pd.DataFrame(
        {c: pd.Series([None if str(v).strip() in NA_VALUES else str(v).strip() for v in df[c]], dtype=object)
         for c in df.columns},
        index=df.index,
    )
    ids = raw[id_column]
    problems = []
    empty = [i + 2 for i, v in enumerate(ids) if v is None]
    if empty:
        problems.append(f"empty {id_column} on line{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty))}")
    seen: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        if v is not None:
            seen.setdefault(v, []).append(i + 2)
    for v, lines in seen.items():
        if len(lines) > 1:
            problems.append(f"{id_column} {v!r} appears {len(lines)} times (lines {', '.join(map(str, lines))})")
    if problems:
        raise ValueError(f"{p}: " + "; ".join(problems) + " (line 1 is the header)")
    if len(raw) == 0:
        raise ValueError(f"{p}: the participants table has no rows")

    typed = {}
    for c in raw.columns:
        col = raw[c]
        vals = [v for v in col if v is not None]
        nums = [_num(v) for v in vals]
        if c != id_column and vals and all(x is not None for x in nums):
            typed[c] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            typed[c] = col.astype("string")
    typed_df = pd.DataFrame(typed, index=raw.index)
    return raw, typed_df


# ------------------------------------------------------------------ entries
@dataclass(frozen=True)
class CohortEntry:
    """One resolved subject: its files (absolute paths), TR and covariates."""

    name: str
    sc: Path
    bold: tuple[Path, ...] = ()
    lengths: Path | None = None
    tr: float | None = None
    atlas: Path | None = None
    covariates: dict = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return len(self.bold)


@dataclass
class Cohort:
    """A resolved cohort: one :class:`CohortEntry` per usable subject, in table order.

    ``skipped`` lists ``(subject, path, problem)`` for every subject dropped with
    ``on_missing="skip"`` (by :func:`resolve` or :meth:`preflight`).
    """

    spec: CohortSpec
    entries: tuple[CohortEntry, ...]
    skipped: list = field(default_factory=list)
    _table: Any = field(default=None, repr=False)
    _n_regions: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ views
    @property
    def root(self) -> Path:
        """The directory relative patterns start from (resolved)."""
        r = self.spec.root
        return r.resolve() if r.exists() else r

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def skipped_names(self) -> list[str]:
        out: list[str] = []
        for s, _p, _m in self.skipped:
            if s not in out:
                out.append(s)
        return out

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, name: str) -> CohortEntry:
        for e in self.entries:
            if e.name == name:
                return e
        skipped = f" (it was skipped: {self._why_skipped(name)})" if name in self.skipped_names else ""
        raise ValueError(f"{self.spec.participants_path}: no subject {name!r} in this cohort{skipped}")

    def _why_skipped(self, name: str) -> str:
        return "; ".join(_problem_line((None, p, m)) for s, p, m in self.skipped if s == name)

    @property
    def covariates(self):
        """The subjects' covariates: a DataFrame indexed by subject name (numbers float64, text strings)."""
        cols = list(self.spec.covariates) if self.spec.covariates is not None else \
            [c for c in self._table.columns if c != self.spec.id_column]
        t = self._table.set_index(self.spec.id_column)
        df = t.loc[self.names, cols].copy()
        df.index.name = self.spec.id_column
        return df

    @property
    def trs(self) -> dict[str, float | None]:
        return {e.name: e.tr for e in self.entries}

    # ------------------------------------------------------------------ loading
    def load_subject(self, name: str):
        """Load one subject as a ``raybrain.data.Subject`` (SC, runs, TR, n/a policy, atlas labels/centres)."""
        return self._load(self.entry(name))

    def _load(self, e: CohortEntry):
        from raybrain.data import io

        spec = self.spec
        labels = centres = None
        if e.atlas is not None:
            labels, centres = io.load_atlas(e.atlas)
        bold: Any = None
        kwargs: dict = {}
        if e.bold:
            if spec.runs == "first" or len(e.bold) == 1:
                bold = str(e.bold[0])
            else:
                bold = [str(b) for b in e.bold]
                kwargs["runs"] = spec.runs
        return io.load_user_subject(
            str(e.sc),
            bold=bold,
            lengths=None if e.lengths is None else str(e.lengths),
            tr=e.tr,
            name=e.name,
            sc_key=spec.sc_key,
            bold_key=spec.bold_key,
            lengths_key=spec.lengths_key,
            labels=labels,
            centres=centres,
            na=spec.na,
            **kwargs,
        )

    def iter_subjects(self):
        """Yield ``Subject`` objects one at a time (nothing is kept in memory)."""
        for e in self.entries:
            yield self._load(e)

    # ------------------------------------------------------------------ checks
    def preflight(self, load: bool = True, min_frames: int | None = None) -> list[Problem]:
        """Check every subject before any expensive work; returns the problems found.

        ``load=True`` reads and validates every subject (its files, labels against the atlas, the
        BOLD length against ``min_frames`` -- default ``spec.min_frames``); ``load=False`` only
        re-checks that the files still exist. With ``on_missing="error"`` any problem raises one
        :class:`CohortError` listing all of them; with ``"skip"`` the failing subjects are dropped,
        added to ``skipped`` and returned (with a warning).
        """
        if min_frames is None:
            min_frames = self.spec.min_frames
        problems: list[Problem] = []
        for e in self.entries:
            mine: list[Problem] = []
            for p in (e.sc, *e.bold, e.lengths, e.atlas):
                if p is not None and not Path(p).is_file():
                    mine.append((e.name, _show(p, self.root), "no such file"))
            if load and not mine:
                try:
                    s = self._load(e)
                except ValueError as exc:
                    mine.append((e.name, *_split_message(str(exc), self.root)))
                else:
                    self._n_regions[e.name] = s.n_regions
                    short = getattr(s, "min_frames", None)
                    if min_frames is not None and short is not None and short < int(min_frames):
                        mine.append((e.name, _show(e.bold[0], self.root) if len(e.bold) == 1 else "",
                                     f"BOLD has {short} frames, at least {int(min_frames)} are needed"))
                    del s
            problems.extend(mine)
        self._settle(problems, "preflight")
        return problems

    def _settle(self, problems: list[Problem], stage: str) -> None:
        if not problems:
            return
        bad = []
        for s, _p, _m in problems:
            if s not in bad:
                bad.append(s)
        where = self.spec.participants_path
        if self.spec.on_missing == "error":
            raise CohortError(f"{where}: {stage} found {len(problems)} problem{'s' * (len(problems) != 1)} in "
                              f"{len(bad)} subject{'s' * (len(bad) != 1)} (on_missing='skip' drops them):", problems)
        self.entries = tuple(e for e in self.entries if e.name not in bad)
        self.skipped.extend(problems)
        if not self.entries:
            raise CohortError(f"{where}: no subjects left after {stage}: all were skipped:", self.skipped)
        warnings.warn(
            f"{where}: {stage} skipped {len(bad)} subject{'s' * (len(bad) != 1)} ({len(self.entries)} left):\n"
            + "\n".join(_problem_line(p) for p in problems),
            stacklevel=3,
        )

    def check_consistency(self) -> dict[int, list[str]]:
        """Subjects per number of regions ``{N: [names]}`` (different parcellations are allowed).

        Uses the sizes seen by :meth:`preflight`; otherwise reads each subject's SC only.
        """
        from raybrain.data import io

        out: dict[int, list[str]] = {}
        for e in self.entries:
            n = self._n_regions.get(e.name)
            if n is None:
                n = int(io.load_connectome(str(e.sc), key=self.spec.sc_key).sc.shape[0])
                self._n_regions[e.name] = n
            out.setdefault(n, []).append(e.name)
        return dict(sorted(out.items()))

    def describe(self) -> str:
        """One line: subjects, runs, TRs and (when known) region counts."""
        runs = sum(e.runs for e in self.entries)
        trs = sorted({e.tr for e in self.entries if e.tr is not None})
        parts = [f"{len(self.entries)} subjects"]
        if runs:
            parts.append(f"{runs} BOLD runs")
        if trs:
            parts.append("TR " + ", ".join(f"{t:g}" for t in trs) + " s")
        if self._n_regions and len(self._n_regions) >= len(self.entries):
            counts: dict[int, int] = {}
            for e in self.entries:
                counts[self._n_regions[e.name]] = counts.get(self._n_regions[e.name], 0) + 1
            parts.append("; ".join(f"{k} regions: {v}" for k, v in sorted(counts.items())))
        if self.skipped:
            parts.append(f"{len(self.skipped_names)} skipped")
        return ", ".join(parts)


def _split_message(msg: str, root: Path) -> tuple[str, str]:
    """A loader's ``"<path>: <problem>"`` as (path shown relative to the root, problem), paths inside shortened."""
    prefix = str(root).rstrip(os.sep) + os.sep
    msg = msg.replace(prefix, "")
    head, sep, rest = msg.partition(": ")
    if sep and head and "\n" not in head and (Path(head).suffix or os.sep in head) and (root / head).exists():
        return head, rest
    return "", msg


def _show(p, root: Path) -> str:
    """A path as shown in problems: relative to the cohort root when under it."""
    p = Path(p)
    try:
        return str(p.relative_to(root))
    except ValueError:
        try:
            rel = os.path.relpath(p, root)
        except ValueError:
            return str(p)
        return rel if not rel.startswith("..") else str(p)


# ------------------------------------------------------------------ resolution
class _Resolver:
    def __init__(self, spec: CohortSpec):
        self.spec = spec
        self.root = spec.root.resolve() if spec.root.exists() else spec.root
        self._listing: dict[Path, list[str]] = {}
        self._json: dict[Path, Any] = {}

    def _abs(self, s: str) -> Path:
        p = Path(s).expanduser()
        return p if p.is_absolute() else self.root / p

    def find(self, pattern: str, values: Mapping[str, str], several: bool) -> tuple[list[Path], list[tuple]]:
        """Paths matching the expanded pattern, or ([], [(shown path, problem)])."""
        s, is_glob = _expand(pattern, values)
        p = self._abs(s)
        shown = _show(p, self.root)
        if not is_glob:
            if not p.exists():
                return [], [(shown, "no such file")]
            if not p.is_file():
                return [], [(shown, "not a regular file")]
            return [p], []
        hits = sorted((Path(h) for h in _glob.glob(str(p)) if Path(h).is_file()), key=lambda h: natural_key(str(h)))
        if not hits:
            return [], [(shown, "no file matches this pattern")]
        if len(hits) > 1 and not several:
            return [], [(shown, f"{len(hits)} files match, expected one: "
                         + ", ".join(_show(h, self.root) for h in hits))]
        return hits, []

    def _read_json(self, p: Path):
        if p not in self._json:
            try:
                with open(p, encoding="utf-8") as fh:
                    self._json[p] = json.load(fh)
            except (OSError, ValueError) as exc:
                self._json[p] = ValueError(f"cannot read the JSON sidecar ({exc})")
        return self._json[p]

    def _list(self, d: Path) -> list[str]:
        if d not in self._listing:
            try:
                self._listing[d] = sorted(n for n in os.listdir(d) if n.endswith("_bold.json") or n == "bold.json")
            except OSError:
                self._listing[d] = []
        return self._listing[d]

    def sidecar_tr(self, bold: Path, values: Mapping[str, str]) -> tuple[float | None, tuple | None]:
        """(TR, None) or (None, (shown path, problem)) for one BOLD run."""
        ents, _suffix = bids_entities(bold.name)
        if self.spec.sidecar is not None:
            fields = dict(values)
            fields.update({k: v for k, v in ents.items()})
            try:
                found, probs = self.find(self.spec.sidecar, fields, several=False)
            except KeyError as exc:
                return None, (_show(bold, self.root), f"the sidecar pattern uses {{{exc.args[0]}}}, which is "
                              f"neither a column nor an entity of this file name")
            if probs:
                return None, probs[0]
            files = found
        else:
            files = self._inherited(bold, ents)
            if not files:
                acq = "_".join(f"{k}-{v}" for k, v in ents.items() if k in ACQUISITION_ENTITIES)
                return None, (_show(bold, self.root), f"no JSON sidecar found (looked for {acq}_bold.json and "
                              f"BIDS-inherited *_bold.json up to the cohort root); give tr= or sidecar=")
        merged: dict = {}
        for f in files:
            data = self._read_json(f)
            if isinstance(data, Exception):
                return None, (_show(f, self.root), str(data))
            if not isinstance(data, dict):
                return None, (_show(f, self.root), "a JSON sidecar must hold an object")
            merged.update(data)
        where = _show(files[-1], self.root)
        if "RepetitionTime" not in merged:
            return None, (where, f"no RepetitionTime in the sidecar{'s' if len(files) > 1 else ''}")
        rt = merged["RepetitionTime"]
        x = None if isinstance(rt, bool) else _num(rt)
        if x is None or not math.isfinite(x) or x <= 0:
            return None, (where, f"RepetitionTime must be a positive number of seconds, got {rt!r}")
        return x, None

    def _inherited(self, bold: Path, ents: dict[str, str]) -> list[Path]:
        """Applicable sidecars, least specific first (BIDS inheritance principle)."""
        acq = {k: v for k, v in ents.items() if k in ACQUISITION_ENTITIES}
        dirs = [bold.parent]
        d = bold.parent
        while d != self.root and self.root in d.parents:
            d = d.parent
            dirs.append(d)
        found: list[tuple[int, int, Path]] = []
        for depth, directory in enumerate(dirs):
            for n in self._list(directory):
                e, _ = bids_entities(n)
                if all(acq.get(k) == v for k, v in e.items()):
                    found.append((-depth, len(e), directory / n))
        own = bold.with_name(bold.name.split(".", 1)[0] + ".json")
        out = [p for *_k, p in sorted(found, key=lambda t: (t[0], t[1], str(t[2])))]
        if own.is_file() and own not in out:
            out.append(own)
        return out


def _check_fields(spec: CohortSpec, columns: Sequence[str]) -> None:
    known = set(columns) | set(_RESERVED)
    for name in ("sc", "bold", "lengths", "atlas"):
        pat = getattr(spec, name)
        if pat is None:
            continue
        for f in _pattern_fields(pat, name):
            if f not in known:
                raise ValueError(
                    f"{spec.participants_path}: the {name} pattern {pat!r} uses {{{f}}}, which is not a column of "
                    f"the participants table (columns: {', '.join(columns)}; also {{participant_id}}, {{sub}})"
                )


def _select(spec: CohortSpec, raw, typed):
    """Row indices kept by include / exclude / subset, in table order."""
    import pandas as pd

    where = spec.participants_path
    ids = list(raw[spec.id_column])
    idset = set(ids)

    def norm(x: str) -> str:
        x = str(x).strip()
        if x in idset:
            return x
        if "sub-" + x in idset:
            return "sub-" + x
        return x

    keep = pd.Series(True, index=raw.index)
    for what in ("include", "exclude"):
        lst = getattr(spec, what)
        if lst is None:
            continue
        wanted = [norm(x) for x in lst]
        unknown = [x for x in wanted if x not in idset]
        if unknown:
            raise ValueError(f"{where}: cohort.{what} names ids that are not in the table: {', '.join(unknown)}")
        hit = raw[spec.id_column].isin(wanted)
        keep &= hit if what == "include" else ~hit
    if spec.subset is not None:
        cols = list(typed.columns)
        try:
            sel = typed.query(spec.subset, engine="python")
        except pd.errors.UndefinedVariableError as exc:
            m = re.search(r"name '([^']+)' is not defined", str(exc))
            col = m.group(1) if m else str(exc)
            raise ValueError(
                f"{where}: cohort.subset {spec.subset!r} uses {col!r}, which is not a column of the participants "
                f"table (columns: {', '.join(cols)}; quote names with spaces or dashes in backticks)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad query
            raise ValueError(f"{where}: cohort.subset {spec.subset!r} is not a valid query on the participants "
                             f"table ({type(exc).__name__}: {exc}); columns: {', '.join(cols)}") from None
        if not isinstance(sel, pd.DataFrame):
            raise ValueError(f"{where}: cohort.subset {spec.subset!r} must be a condition selecting rows")
        keep &= raw.index.isin(sel.index)
    return [i for i in raw.index if keep[i]]


def resolve(spec: CohortSpec) -> Cohort:
    """Find and check every subject's files, TR and covariates; see the module docstring.

    Raises ``ValueError`` for a problem with the declaration or the participants table (one
    message naming the file and the column), and :class:`CohortError` listing every subject
    problem with ``on_missing="error"`` (or when nothing is left after filtering / skipping).
    """
    where = spec.participants_path
    raw, typed = read_participants(where, spec.id_column)
    columns = list(raw.columns)
    _check_fields(spec, columns)
    if spec.covariates is not None:
        unknown = [c for c in spec.covariates if c not in columns]
        if unknown:
            raise ValueError(f"{where}: cohort.covariates names columns that are not in the table: "
                             f"{', '.join(unknown)} (columns: {', '.join(columns)})")
    tr_col = spec.tr["column"] if isinstance(spec.tr, dict) else None
    if tr_col is not None and tr_col not in columns:
        raise ValueError(f"{where}: cohort.tr names column {tr_col!r}, which is not in the table "
                         f"(columns: {', '.join(columns)})")
    if not spec.root.is_dir():
        raise ValueError(f"{spec.root}: base_dir is not a directory")

    rows = _select(spec, raw, typed)
    if not rows:
        raise CohortError(f"{where}: no subjects left after include/exclude/subset "
                          f"({len(raw)} in the table)", [])

    res = _Resolver(spec)
    cov_cols = list(spec.covariates) if spec.covariates is not None else [c for c in columns if c != spec.id_column]
    entries: list[CohortEntry] = []
    problems: list[Problem] = []
    for i in rows:
        row = raw.loc[i]
        pid = row[spec.id_column]
        values = {c: row[c] for c in columns}
        values["participant_id"] = pid
        values["sub"] = _sub_label(pid)
        mine: list[tuple] = []

        def missing_fields(pattern: str, what: str) -> bool:
            gone = [f for f in _pattern_fields(pattern, what) if values.get(f) is None]
            for f in gone:
                mine.append((where.name, f"column {f!r} is n/a, and the {what} pattern needs it"))
            return bool(gone)

        def one(pattern: str | None, what: str) -> Path | None:
            if pattern is None or missing_fields(pattern, what):
                return None
            hits, probs = res.find(pattern, values, several=False)
            mine.extend(probs)
            return hits[0] if hits else None

        sc = one(spec.sc, "sc")
        lengths = one(spec.lengths, "lengths")
        atlas = one(spec.atlas, "atlas")
        bold: list[Path] = []
        if spec.bold is not None and not missing_fields(spec.bold, "bold"):
            bold, probs = res.find(spec.bold, values, several=True)
            mine.extend(probs)
        if spec.runs == "first":
            bold = bold[:1]

        tr: float | None = None
        mode = spec.tr_mode
        if mode == "fixed":
            tr = float(spec.tr)
        elif mode == "column":
            v = row[tr_col]
            x = None if v is None else _num(v)
            if x is None or not math.isfinite(x) or x <= 0:
                mine.append((where.name, f"column {tr_col!r} must be a positive number of seconds (the TR), "
                                         f"got {'n/a' if v is None else repr(v)}"))
            else:
                tr = x
        elif mode == "sidecar" and bold:
            trs = []
            for b in bold:
                x, prob = res.sidecar_tr(b, values)
                if prob:
                    mine.append(prob)
                else:
                    trs.append((x, b))
            if trs and len(trs) == len(bold):
                first = trs[0][0]
                if any(not math.isclose(x, first, rel_tol=1e-6) for x, _b in trs):
                    mine.append(("", "the runs disagree on the TR: " + ", ".join(
                        f"{_show(b, res.root)} {x:g} s" for x, b in trs) + " (select runs with one TR)"))
                else:
                    tr = first

        if mine:
            problems.extend((pid, path, text) for path, text in mine)
            continue
        cov = {}
        trow = typed.loc[i]
        for c in cov_cols:
            v = trow[c]
            cov[c] = None if v is None or (not isinstance(v, str) and _isna(v)) else (
                float(v) if isinstance(v, (int, float, np.floating)) else str(v))
        entries.append(CohortEntry(name=pid, sc=sc, bold=tuple(bold), lengths=lengths, tr=tr, atlas=atlas,
                                   covariates=cov))

    cohort = Cohort(spec=spec, entries=tuple(entries), _table=typed.loc[rows].reset_index(drop=True))
    if problems:
        cohort._settle(problems, "resolve")
    return cohort


def _isna(v) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False
