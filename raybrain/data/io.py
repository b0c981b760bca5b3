"""Loaders for user data: matrices, connectomes, regional time series, atlases, regional maps,
FCD targets, TVB connectivity zips, and whole subjects (SC + BOLD runs or precomputed targets).

Formats: ``.npy``/``.npz``/``.mat`` (MATLAB up to v7.2; ``key`` picks a variable) and text
tables ``.csv``/``.tsv``/``.txt`` as pipelines write them (a header row of labels, a first
column of labels and BIDS ``n/a`` cells are recognised where they make sense; see
:mod:`raybrain.data.tables`). Each loader states its policy (what it changes and why) in its
docstring and returns a one-line note of what it did.

Every problem (missing or unreadable file, wrong key, bad shape, NaN, ...) is a ``ValueError``
whose message starts with the file path.
"""
from __future__ import annotations

import bz2
import io
import os
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from raybrain.data import tables, validate
from raybrain.data.subject import Subject

__all__ = [
    "Connectivity",
    "Connectome",
    "load_matrix",
    "load_tvb_connectivity",
    "load_connectome",
    "load_timeseries",
    "load_atlas",
    "load_map",
    "load_fcd_target",
    "fcd_cdf_to_sample",
    "load_user_subject",
]

_TEXT_SUFFIXES = (".csv", ".txt", ".tsv")
_SUPPORTED = (".npy", ".npz", ".mat") + _TEXT_SUFFIXES
#: TR used when a subject is loaded without BOLD and no TR is given (HCP, s). It only sets the
#: sampling interval of simulated BOLD for that subject.
DEFAULT_TR_WITHOUT_BOLD = 0.72


class Connectivity(NamedTuple):
    """A structural connectome read from a TVB connectivity zip."""

    sc: np.ndarray  # (N, N) weights
    lengths: np.ndarray  # (N, N) tract lengths (mm)
    labels: tuple[str, ...]  # region labels
    centres: np.ndarray  # (N, 3) region centres


def _existing_file(path) -> Path:
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise ValueError(f"{p}: no such file")
    if not p.is_file():
        raise ValueError(f"{p}: not a regular file")
    return p


def _numeric(value, source: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{source}: expected a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _refuse_pickles(exc: Exception, p: Path) -> None:
    """A clear error when ``np.load(..., allow_pickle=False)`` met pickled (object) data."""
    if "allow_pickle" in str(exc) or "pickled" in str(exc):
        raise ValueError(
            f"{p}: holds pickled Python objects (an object array or a pickle), which raybrain never loads "
            f"from user files; save a numeric array instead, e.g. np.save(path, np.asarray(a, dtype=float))"
        ) from None


def _pick_key(arrays: dict, key: str | None, source: str) -> np.ndarray:
    """The array under ``key``, or the only numeric array when ``key`` is None."""
    names = sorted(k for k in arrays if not (k.startswith("__") and k.endswith("__")))
    if key is not None:
        if key not in arrays:
            raise ValueError(f"{source}: no variable {key!r} in the file; available: {names}")
        return _numeric(arrays[key], f"{source}[{key}]")
    numeric = [k for k in names if isinstance(arrays[k], np.ndarray) and arrays[k].dtype.kind in "biuf"]
    if len(numeric) == 1:
        return _numeric(arrays[numeric[0]], f"{source}[{numeric[0]}]")
    if not numeric:
        raise ValueError(f"{source}: no numeric array in the file (variables: {names})")
    raise ValueError(f"{source}: ambiguous, the file holds several arrays {numeric}; pass key= to choose one")


def _load_text(p: Path) -> np.ndarray:
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read as text ({exc})") from None
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    delimiter = "," if "," in first else ("\t" if p.suffix.lower() == ".tsv" and "\t" in first else None)
    try:
        arr = np.loadtxt(io.StringIO(text), delimiter=delimiter, ndmin=2, comments="#", dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{p}: cannot parse as a numeric table ({exc})") from None
    if arr.size == 0:
        raise ValueError(f"{p}: file holds no numbers")
    return arr


def load_matrix(path, key: str | None = None) -> np.ndarray:
    """Load a numeric array (float64) from a file.

    Formats by suffix: ``.npy`` (``np.load``, no pickles), ``.npz`` and ``.mat`` (MATLAB v4-v7.2
    via ``scipy.io.loadmat``; ``key`` selects the variable and may be omitted when the file holds
    exactly one numeric array), ``.csv``/``.txt``/``.tsv`` (comma-, tab- or whitespace-separated
    numbers; ``#`` starts a comment). Shape is not checked here; see ``raybrain.data.validate``.
    """
    p = _existing_file(path)
    suffix = p.suffix.lower()
    source = str(p)
    if suffix not in _SUPPORTED:
        raise ValueError(f"{p}: unsupported file type {suffix!r}; use one of {', '.join(_SUPPORTED)}")
    if key is not None and suffix not in (".mat", ".npz"):
        raise ValueError(f"{p}: key={key!r} only applies to .mat and .npz files")
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any read failure is reported with the path
            _refuse_pickles(exc, p)
            raise ValueError(f"{p}: cannot read as .npy ({exc})") from None
        return _numeric(arr, source)
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001
            _refuse_pickles(exc, p)
            raise ValueError(f"{p}: cannot read as .npz ({exc})") from None
        return _pick_key(arrays, key, source)
    if suffix == ".mat":
        import scipy.io

        try:
            arrays = scipy.io.loadmat(p)
        except NotImplementedError:
            raise ValueError(
                f"{p}: MATLAB v7.3 (HDF5) files are not supported; re-save with save(..., '-v7') "
                f"or export the matrix to .npy/.csv"
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{p}: cannot read as a MATLAB .mat file ({exc})") from None
        return _pick_key(arrays, key, source)
    return _load_text(p)


# ------------------------------------------------------------------ TVB zip
def _member_stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1].lower()
    if base.endswith(".bz2"):
        base = base[:-4]
    for ext in (".txt", ".csv", ".dat"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def _find_member(zf: zipfile.ZipFile, stems: tuple[str, ...], source: str, required: bool = True) -> str | None:
    files = [n for n in zf.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
    exact = [n for n in files if _member_stem(n) in stems]
    found = exact or [n for n in files if any(_member_stem(n).startswith(s) for s in stems)]
    if len(found) > 1:
        raise ValueError(f"{source}: several members match {stems[0]!r}: {sorted(found)}")
    if not found:
        if required:
            raise ValueError(f"{source}: no {stems[0]} file in the zip (members: {sorted(files)})")
        return None
    return found[0]


def _read_member(zf: zipfile.ZipFile, name: str, source: str) -> str:
    try:
        data = zf.read(name)
        if name.lower().endswith(".bz2"):
            data = bz2.decompress(data)
        return data.decode("utf-8")
    except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ValueError(f"{source}:{name}: cannot read ({exc})") from None


def _parse_table(text: str, source: str) -> np.ndarray:
    try:
        return np.loadtxt(io.StringIO(text), ndmin=2, comments="#", dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{source}: cannot parse as a numeric table ({exc})") from None


def _parse_centres(text: str, source: str) -> tuple[tuple[str, ...], np.ndarray]:
    labels, xyz = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) < 4:
            raise ValueError(f"{source}: line {lineno}: expected 'label x y z', got {line.strip()!r}")
        try:
            xyz.append([float(v) for v in parts[-3:]])
        except ValueError:
            raise ValueError(f"{source}: line {lineno}: coordinates must be numbers, got {line.strip()!r}") from None
        labels.append(" ".join(parts[:-3]))
    return tuple(labels), np.asarray(xyz, dtype=np.float64).reshape(-1, 3)


def load_tvb_connectivity(zip_path) -> Connectivity:
    """Read a TVB connectivity zip (the layout of the ``tvb-data`` package).

    The zip holds plain-text tables, possibly ``.bz2``-compressed: ``weights.txt`` (N, N),
    ``tract_lengths.txt`` (N, N) and ``centres.txt`` (one ``label x y z`` line per region);
    other members (areas, cortical, hemispheres, orientations) are ignored. Members are found
    by name as TVB does (``centers`` is accepted for ``centres``, ``tract*`` for lengths).
    """
    p = _existing_file(zip_path)
    source = str(p)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{p}: not a readable zip file ({exc})") from None
    with zf:
        w_name = _find_member(zf, ("weights",), source)
        l_name = _find_member(zf, ("tract_lengths", "tract"), source)
        c_name = _find_member(zf, ("centres", "centers"), source)
        sc = validate.check_sc(_parse_table(_read_member(zf, w_name, source), f"{source}:{w_name}"),
                               source=f"{source}:{w_name}")
        n = sc.shape[0]
        lengths = validate.check_lengths(
            _parse_table(_read_member(zf, l_name, source), f"{source}:{l_name}"), n, source=f"{source}:{l_name}"
        )
        labels, centres = _parse_centres(_read_member(zf, c_name, source), f"{source}:{c_name}")
        if len(labels) != n:
            raise ValueError(f"{source}:{c_name}: {len(labels)} regions listed, but the weights are {n} x {n}")
    return Connectivity(sc=sc, lengths=lengths, labels=labels, centres=centres)



# ------------------------------------------------------------------ shared helpers
def _choice(value, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what}: must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def _read(p: Path, key: str | None, *, row_labels: bool) -> tables.Table:
    """A text table (header / label column recognised) or a binary array as a header-less Table."""
    suffix = p.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        if key is not None:
            raise ValueError(f"{p}: key={key!r} only applies to .mat and .npz files")
        return tables.read_table(p, row_labels=row_labels)
    a = load_matrix(p, key=key)
    return tables.Table(values=a, na=np.isnan(a), header=None, row_labels=None, lines=())


def _read_square(p: Path, key: str | None, what: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """An (N, N) matrix file and its region labels (header row and/or first column), if any."""
    t = _read(p, key, row_labels=True)
    labels = t.header if t.header is not None else t.row_labels
    if t.header is not None and t.row_labels is not None and t.header != t.row_labels:
        bad = next(i for i, (a, b) in enumerate(zip(t.header, t.row_labels)) if a != b) \
            if len(t.header) == len(t.row_labels) else min(len(t.header), len(t.row_labels))
        raise ValueError(f"{p}: the header row and the first column list different region labels "
                         f"(first difference at region {bad}); a {what} file has one order for both")
    a = t.values
    if labels is not None and a.shape != (len(labels), len(labels)):
        where = "header row" if t.header is not None else "first column"
        raise ValueError(f"{p}: cannot parse as a numeric table: {len(labels)} region labels in the {where} but "
                         f"{a.shape[0]} x {a.shape[1]} values; a labelled {what} has one row and one column per label")
    return a, (tuple(labels) if labels is not None else None)


def _mirror(a: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A triangular matrix mirrored to symmetric (the diagonal kept), with a note."""
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.all(np.isfinite(a)):
        return a, None
    lower, upper = np.tril(a, -1), np.triu(a, 1)
    diag = np.diag(np.diag(a))
    if not lower.any() and upper.any():
        return upper + upper.T + diag, "upper-triangular (MRtrix tck2connectome) mirrored to symmetric"
    if not upper.any() and lower.any():
        return lower + lower.T + diag, "lower-triangular mirrored to symmetric"
    return a, None


def _tidy_sc(a, source: str, diagonal: str) -> tuple[np.ndarray, list[str]]:
    """Validated SC: a triangular matrix mirrored, the diagonal zeroed (``diagonal="zero"``);
    notes of what was done."""
    a = validate.check_sc(a, source=source)
    a, mirrored = _mirror(a)
    parts = [mirrored] if mirrored else []
    if mirrored is None and not np.array_equal(a, a.T):
        rel = float(np.abs(a - a.T).max() / np.abs(a).max())
        if rel > 1e-6:
            parts.append(f"asymmetric (max |SC - SC^T| = {rel:.3g} of the largest weight): kept as a directed SC")
    d = np.diag(a)
    if diagonal == "zero" and d.any():
        parts.append(f"diagonal (sum {d.sum():.6g}) set to 0")
        a = a.copy()
        np.fill_diagonal(a, 0.0)
    return a, parts


def _note(name: str, parts) -> str:
    parts = [x for x in parts if x]
    return f"{name}: {'; '.join(parts)}" if parts else ""


# ------------------------------------------------------------------ connectome
class Connectome(NamedTuple):
    """A structural connectome read by :func:`load_connectome`."""

    sc: np.ndarray  # (N, N) float64, validated; symmetric if the file held a triangle
    labels: tuple[str, ...] | None
    centres: np.ndarray | None  # (N, 3) mm
    lengths: np.ndarray | None  # (N, N) mm
    note: str  # one line: what was done ("" if nothing)


def _reorder_connectome(c: Connectome, idx) -> Connectome:
    if idx is None:
        return c
    ix = np.ix_(idx, idx)
    return c._replace(sc=c.sc[ix], lengths=None if c.lengths is None else c.lengths[ix],
                      centres=None if c.centres is None else c.centres[idx])


def load_connectome(path, *, key=None, labels=None, diagonal: str = "zero") -> Connectome:
    """Load a structural connectome: ``.csv``/``.tsv``/``.txt`` (with or without a header row
    and/or a first column of region labels), ``.npy``/``.npz``/``.mat`` (``key``), or a TVB
    connectivity ``.zip`` (its labels, centres and tract lengths kept).

    Policy: a matrix whose strict lower triangle is all zero while the upper is not (MRtrix
    ``tck2connectome`` writes the upper triangle only) is mirrored to symmetric, and likewise for
    a lower triangle; any other asymmetric matrix is kept as a directed SC. ``diagonal="zero"``
    (default) removes self-connections (they couple no two regions); ``"keep"`` keeps them.
    ``labels`` names the regions of a file without labels, or, for a file with labels, the order
    to put its regions in (same set of labels required). The note says what was done.
    """
    _choice(diagonal, ("zero", "keep"), "diagonal")
    p = _existing_file(path)
    centres = lengths = None
    if p.suffix.lower() == ".zip":
        if key is not None:
            raise ValueError(f"{p}: key does not apply to a TVB connectivity zip")
        conn = load_tvb_connectivity(p)
        a, file_labels, centres, lengths = conn.sc, conn.labels, conn.centres, conn.lengths
    else:
        a, file_labels = _read_square(p, key, "connectome")
    a, parts = _tidy_sc(a, str(p), diagonal)
    c = Connectome(sc=a, labels=file_labels, centres=centres, lengths=lengths, note="")
    if labels is not None:
        labels = validate.check_labels(labels, a.shape[0], source="labels")
        if file_labels is not None:
            idx = tables.match_labels(file_labels, labels, str(p), "labels")
            if idx is not None:
                c = _reorder_connectome(c, idx)
                parts.append("regions reordered to the given labels")
        c = c._replace(labels=labels)
    return c._replace(note=_note(p.name, parts))


# ------------------------------------------------------------------ time series
NA_POLICIES = ("error", "drop-frames", "drop-regions")


def _raw_timeseries(p: Path, key) -> tuple[np.ndarray, tuple[str, ...] | None, list[str]]:
    """(T, N) values with NaN at missing cells, header labels, notes."""
    t = _read(p, key, row_labels=False)
    a, labels, parts = t.values, t.header, []
    if a.ndim != 2:
        raise ValueError(f"{p}: BOLD must be a 2-D (T, N) array (time, regions), got shape {a.shape}")
    if labels is not None and labels[0] == "" and a.shape[1] > 1:
        a, labels = a[:, 1:], labels[1:]
        parts.append("first column has no header: read as a frame index and dropped")
    if labels is not None and "" in labels:
        raise ValueError(f"{p}: column {labels.index('') + 1} has an empty header; every region needs a label")
    if labels is not None:
        tables.check_unique(labels, str(p))
    return a, labels, parts


def load_timeseries(path, *, key=None, na: str = "error") -> tuple[np.ndarray, tuple[str, ...] | None, str]:
    """Load regional time series (T, N), time first: a TSV/CSV (e.g. XCP-D ``*_timeseries.tsv``;
    a header row of region labels is recognised, an unnamed first column is a frame index and
    dropped) or ``.npy``/``.npz``/``.mat`` (``key``). Returns (bold, labels or None, note).

    Policy for missing cells (``n/a``, ``NaN``, empty): ``na="error"`` (default) refuses them in
    one line naming the regions and frames; ``"drop-frames"`` removes every frame with a missing
    cell (censored volumes), but a region that is entirely n/a is still an error;
    ``"drop-regions"`` first removes the regions that are entirely n/a (the note lists them, so
    the SC can drop the same regions), then drops frames as ``"drop-frames"``. Nothing is ever
    filled in (no zeros, no interpolation). A non-numeric cell is an error naming row and column.
    """
    _choice(na, NA_POLICIES, "na")
    p = _existing_file(path)
    a, labels, parts = _raw_timeseries(p, key)
    (a,), keep, notes = tables.apply_na([a], [str(p)], labels, na)
    if labels is not None:
        labels = tuple(x for x, k in zip(labels, keep) if k)
    a = validate.check_bold(a, a.shape[1], source=str(p))
    return a, labels, "; ".join([_note(p.name, parts)] * bool(parts) + notes)


# ------------------------------------------------------------------ atlas, maps, FCD
def load_atlas(path) -> tuple[tuple[str, ...], np.ndarray | None]:
    """Region labels and centres (N, 3) mm or None from an atlas table (BIDS ``dseg.tsv`` style).

    Policy: with a header, the labels come from the first of the columns ``name``, ``label``,
    ``region``, ``roi`` (case-insensitive), the centres from ``x``, ``y``, ``z`` (all three or
    none), and rows are put in the order of an ``index`` column when there is one (the order of
    the connectome's rows for a label image). Without a header, rows are ``label``,
    ``label x y z`` or ``index label x y z``. Labels must be unique.
    """
    p = _existing_file(path)
    names, centres, index = tables.read_atlas(p)
    tables.check_unique(names, str(p))
    cen = None if centres is None else validate.check_centres(centres, len(names), source=str(p))
    if index is not None:
        if len(set(index)) != len(index):
            raise ValueError(f"{p}: the index column has duplicate values")
        order = np.argsort(index, kind="stable")
        names = [names[i] for i in order]
        cen = None if cen is None else cen[order]
    return tuple(names), cen


def load_map(path, n_regions: int, labels=None, *, key=None) -> np.ndarray:
    """Per-region map(s) (myelin, T1w/T2w, gradients): (N,) for one map, (K, N) for several.

    Text (CSV/TSV, optional header and label column): rows are regions when the file has a
    label column or N rows (one column per map; the header names the maps), else columns are
    regions (one row per map; a header then names the regions). Binary (``.npy``/``.npz``/
    ``.mat``): a 1-D array, or 2-D (K, N) (or (N, K), transposed). Policy: when the file names
    its regions and ``labels`` is given, the values are taken in the order of ``labels`` (every
    label must be in the file; regions the file has beyond them, e.g. regions dropped for lack
    of BOLD coverage, are left out); each map must have N values, all finite, not constant.
    """
    n = int(n_regions)
    p = _existing_file(path)
    t = _read(p, key, row_labels=True)
    a, region_labels = t.values, None
    text = p.suffix.lower() in _TEXT_SUFFIXES
    if labels is not None:
        labels = validate.check_labels(labels, n, source="labels")
    header_regions = t.header is not None and labels is not None and set(labels) <= set(t.header)
    if a.ndim == 1:
        maps = a[None, :]
    elif a.ndim != 2:
        raise ValueError(f"{p}: a map must be 1-D (N,) or 2-D (K, N), got shape {a.shape}")
    elif t.row_labels is not None or (text and a.shape[0] == n and not header_regions):
        maps, region_labels = a.T, t.row_labels
    elif a.shape[1] == n or header_regions:
        maps, region_labels = a, t.header
    else:
        maps = a.T if a.shape[0] == n else a
    if labels is not None and region_labels is not None:
        idx = tables.match_labels(region_labels, labels, str(p), "the SC", allow_extra=True)
        maps = maps if idx is None else maps[:, idx]
    if maps.shape[1] != n:
        raise ValueError(f"{p}: expected {n} values per map (one per region), got shape {a.shape}")
    for k, m in enumerate(maps):
        which = f"map {k}" if len(maps) > 1 else "map"
        bad = ~np.isfinite(m)
        if bad.any():
            raise ValueError(f"{p}: {which} must be finite, found {int(bad.sum())} missing/NaN/inf values "
                             f"(first at region {int(np.flatnonzero(bad)[0])})")
        if np.ptp(m) <= 1e-12 * max(np.abs(m).max(), np.finfo(float).tiny):
            raise ValueError(f"{p}: {which} is constant ({m[0]:g} everywhere); it cannot vary a parameter")
    return np.ascontiguousarray(maps[0] if len(maps) == 1 else maps, dtype=np.float64)


#: CBIG pMFM/pFIC FCD CDFs: cumulative counts over this many equal bins on [-1, 1]
CBIG_FCD_BINS = 10000


def fcd_cdf_to_sample(cdf, n_quantiles: int = CBIG_FCD_BINS) -> np.ndarray:
    """A sorted FCD sample whose empirical CDF follows ``cdf``, a CBIG FCD CDF (cumulative counts,
    or fractions, over ``len(cdf)`` equal bins on [-1, 1]).

    Sample j (j = 1 … Q) is the centre of the first bin whose cumulative share reaches
    (j - 1/2) / Q, so at every bin edge the sample's CDF is within 1 / (2Q) of the given one:
    a binned KS distance against the sample equals the one against the CDF to within 1 / (2Q).
    """
    c = np.asarray(cdf, dtype=np.float64).ravel()
    bins = c.size
    q = (np.arange(int(n_quantiles)) + 0.5) / int(n_quantiles) * c[-1]
    k = np.searchsorted(c, q, side="left")
    return -1.0 + (k + 0.5) * (2.0 / bins)


def _fcd_values(v, source: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 2 and 1 in v.shape:
        v = v.ravel()
    if v.ndim != 1 or v.size < 1:
        raise ValueError(f"{source}: an FCD target must be 1-D (FCD values or a CBIG CDF), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{source}: FCD target must be finite, found {int(np.sum(~np.isfinite(v)))} missing/NaN/inf")
    monotone = v.size == CBIG_FCD_BINS and v[0] >= 0 and bool(np.all(np.diff(v) >= 0))
    if monotone and (v[-1] > 1 or (v[0] == 0 and np.isclose(v[-1], 1.0, rtol=0, atol=1e-9))):
        return fcd_cdf_to_sample(v)
    if np.any(np.abs(v) > 1 + 1e-9):
        raise ValueError(
            f"{source}: values outside [-1, 1] (min {v.min():.4g}, max {v.max():.4g}) are not FCD values, and this is "
            f"not a CBIG FCD CDF ({CBIG_FCD_BINS} non-decreasing cumulative counts); got {v.size} values")
    return validate.check_fcd_target(v, source=source)


def load_fcd_target(path, *, key=None) -> np.ndarray:
    """A sorted FCD sample (1-D) from a file: FCD values (a row or a column, any order), or a CBIG
    pMFM/pFIC FCD CDF (10000 non-decreasing cumulative counts over equal bins on [-1, 1]; a CDF
    normalised to end at 1 is recognised when it starts at 0).

    Policy: a CDF is converted to 10000 quantiles at bin centres (:func:`fcd_cdf_to_sample`), so
    a KS distance against the result matches the KS against the CDF to within 1e-3. A
    precomputed FCD cannot be re-segmented: fit with the window and step (TRs) it was made with.
    """
    p = _existing_file(path)
    return _fcd_values(_read(p, key, row_labels=False).values, str(p))


# ------------------------------------------------------------------ subject
def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _src(x) -> str:
    return str(Path(os.fspath(x)).expanduser())


def _bold_items(bold) -> list:
    """One item per run: a list/tuple of paths or 2-D arrays is several runs, anything else one."""
    if isinstance(bold, (list, tuple)) and bold and all(
            _is_path(b) or (isinstance(b, np.ndarray) and b.ndim == 2) for b in bold):
        return list(bold)
    return [bold]


def _run_name(src: str, i: int) -> str:
    m = re.search(r"run-([A-Za-z0-9]+)", Path(src).name)
    return f"run-{m.group(1)}" if m else f"run-{i + 1}"


def _run_tr(tr, n_runs: int, sources: list[str]):
    if not isinstance(tr, (list, tuple)):
        return tr
    if len(tr) != n_runs:
        raise ValueError(f"tr: {len(tr)} TRs given for {n_runs} BOLD runs; give one TR or one per run")
    trs = [validate.check_tr(t, source=f"tr[{i}]") for i, t in enumerate(tr)]
    if any(not np.isclose(t, trs[0], rtol=1e-9, atol=0.0) for t in trs):
        raise ValueError(f"{sources[0]}: the runs have different TRs {trs} s; all runs of a subject must share one TR")
    return trs[0]


def load_user_subject(
    sc,
    bold=None,
    lengths=None,
    tr: float | None = None,
    name: str | None = None,
    *,
    sc_key: str | None = None,
    bold_key: str | None = None,
    lengths_key: str | None = None,
    labels=None,
    centres=None,
    na: str = "error",
    fc=None,
    fcd=None,
    runs: str = "pool",
    diagonal: str = "zero",
) -> Subject:
    """Build a validated ``Subject`` from user files (paths; arrays are accepted too).

    * ``sc``: a connectome (:func:`load_connectome`: triangles mirrored, diagonal zeroed unless
      ``diagonal="keep"``) or a TVB ``.zip`` (its lengths, labels and centres used unless given).
      ``lengths``: an (N, N) file or array (a triangle is mirrored; without labels it is taken in
      the SC file's order). ``labels``: region names, or the order to put labelled files in.
      ``centres``: an atlas table (:func:`load_atlas`, matched by label) or an (N, 3) array.
    * ``bold``: one (T, N) time-series file/array or a list of runs (:func:`load_timeseries`,
      missing cells handled by ``na``). ``tr`` (s, one value or one per run, all equal) is
      required with BOLD; without BOLD or targets it defaults to ``DEFAULT_TR_WITHOUT_BOLD``.
    * Several runs: ``runs="pool"`` (default: FC = mean of the runs' FCs, FCD = the runs' FCD
      distributions pooled, so no window straddles a run boundary; the subject's ``members``
      are the runs), ``"concatenate"`` (each run z-scored per region, then joined in time) or
      ``"first"``. All runs must have the same regions.
    * ``fc``/``fcd``: precomputed targets (file or array) for a subject without BOLD; an FCD file
      may be a CBIG CDF (:func:`load_fcd_target`). ``tr`` is then required.

    Labels policy: when the SC and the BOLD (or FC, centres) both name their regions, the same
    set in another order is reordered to the SC's order (noted); different sets are an error
    naming the file and the missing/extra labels. When only the BOLD names them, the SC is
    taken to be in the BOLD's order. With ``na="drop-regions"`` the regions dropped from the BOLD
    are dropped from the SC, lengths, centres and labels too. ``subject.notes`` says what was
    done. ``*_key`` select variables in .mat/.npz files; ``name`` defaults to the SC file's stem.
    """
    _choice(na, NA_POLICIES, "na")
    _choice(runs, ("pool", "concatenate", "first"), "runs")
    _choice(diagonal, ("zero", "keep"), "diagonal")
    sources: list[str] = []
    notes: list[str] = []
    # ---- structure
    if _is_path(sc):
        sc_src = _src(sc)
        sources.append(f"sc={sc_src}")
        if Path(sc_src).suffix.lower() == ".zip" and sc_key is not None:
            raise ValueError(f"{sc_src}: sc_key does not apply to a TVB connectivity zip")
        conn = load_connectome(sc_src, key=sc_key, diagonal=diagonal)
        default_name = Path(sc_src).stem
    else:
        sc_src, default_name = "sc", "subject"
        a, parts = _tidy_sc(sc, "sc", diagonal)
        conn = Connectome(sc=a, labels=None, centres=None, lengths=None, note=_note("sc", parts))
    name = name if name is not None else default_name
    notes.append(conn.note)
    n = conn.sc.shape[0]
    perm = None  # the SC file's order -> the subject's order
    if labels is not None:
        labels = validate.check_labels(labels, n, source="labels")
        if conn.labels is not None:
            perm = tables.match_labels(conn.labels, labels, sc_src, "labels")
            if perm is not None:
                conn = _reorder_connectome(conn, perm)
                notes.append(f"{Path(sc_src).name}: regions reordered to the given labels")
        conn = conn._replace(labels=labels)
    if lengths is not None:
        if _is_path(lengths):
            len_src = _src(lengths)
            sources.append(f"lengths={len_src}")
            a, len_labels = _read_square(_existing_file(len_src), lengths_key, "lengths")
            if a.ndim == 2 and a.shape == (n, n):
                a, mirrored = _mirror(a)
                notes.append(_note(Path(len_src).name, [mirrored]))
                if len_labels is not None and conn.labels is not None:
                    idx = tables.match_labels(len_labels, conn.labels, len_src, "the SC")
                    a = a if idx is None else a[np.ix_(idx, idx)]
                elif len_labels is None and perm is not None:
                    a = a[np.ix_(perm, perm)]
                    notes.append(f"{Path(len_src).name}: taken in the SC file's region order and reordered like it")
            conn = conn._replace(lengths=validate.check_lengths(a, n, source=len_src))
        else:
            conn = conn._replace(lengths=validate.check_lengths(lengths, n, source="lengths"))
    if centres is not None:
        if _is_path(centres):
            cen_src = _src(centres)
            sources.append(f"centres={cen_src}")
            atlas_labels, cen = load_atlas(cen_src)
            if cen is None:
                raise ValueError(f"{cen_src}: no x, y, z columns, so no centres")
            if conn.labels is not None:
                idx = tables.match_labels(atlas_labels, conn.labels, cen_src, "the SC")
                cen = cen if idx is None else cen[idx]
            elif len(atlas_labels) == n:
                conn = conn._replace(labels=atlas_labels)
                notes.append(f"{Path(cen_src).name}: region labels taken from the atlas (the SC has none)")
            conn = conn._replace(centres=validate.check_centres(cen, n, source=cen_src))
        else:
            conn = conn._replace(centres=validate.check_centres(centres, n, source="centres"))
    # ---- function
    if bold is not None and (fc is not None or fcd is not None):
        raise ValueError(f"{'fc' if fc is not None else 'fcd'}: give BOLD or precomputed fc/fcd targets, not both")
    bold_arr, members, fc_arr, fcd_arr = None, (), None, None
    if bold is not None:
        conn, bold_arr, members, tr = _load_runs(bold, conn, name, tr, bold_key, na, runs, sources, notes)
    if fc is not None or fcd is not None:
        if tr is None:
            raise ValueError(f"{_src(fc) if _is_path(fc) else 'fc'}: the TR (seconds) of the recording the FC/FCD "
                             f"targets come from is required; pass tr=")
        if fc is not None:
            fc_src = _src(fc) if _is_path(fc) else "fc"
            if _is_path(fc):
                sources.append(f"fc={fc_src}")
                fc, fc_labels = _read_square(_existing_file(fc_src), None, "FC")
                if fc_labels is not None and conn.labels is not None:
                    idx = tables.match_labels(fc_labels, conn.labels, fc_src, "the SC")
                    fc = fc if idx is None else np.asarray(fc)[np.ix_(idx, idx)]
                elif fc_labels is not None and len(fc_labels) == n:
                    conn = conn._replace(labels=fc_labels)
            fc_arr = validate.check_fc_target(fc, n, source=fc_src)
        if fcd is not None:
            if _is_path(fcd):
                sources.append(f"fcd={_src(fcd)}")
                fcd_arr = load_fcd_target(_src(fcd))
            else:
                fcd_arr = _fcd_values(fcd, "fcd")
    tr_val = validate.check_tr(DEFAULT_TR_WITHOUT_BOLD if tr is None else tr, source="tr")
    return Subject(
        name=name, sc=conn.sc, tr=tr_val, bold=bold_arr, lengths=conn.lengths, labels=conn.labels,
        centres=conn.centres, notes=tuple(x for x in notes if x), fc_target=fc_arr, fcd_target=fcd_arr,
        members=members, source=", ".join(sources) if sources else "arguments",
    )


def _load_runs(bold, conn: Connectome, name: str, tr, key, na: str, runs: str, sources: list, notes: list):
    """The BOLD runs of a subject, matched to the SC: (connectome, bold or None, members, TR)."""
    n = conn.sc.shape[0]
    raw, srcs, labs = [], [], []
    for i, item in enumerate(_bold_items(bold)):
        if _is_path(item):
            p = _existing_file(item)
            a, lab, parts = _raw_timeseries(p, key)
            src = str(p)
            sources.append(f"bold={src}")
            notes.append(_note(p.name, parts))
        else:
            src = "bold" if i == 0 and not isinstance(bold, (list, tuple)) else f"bold[{i}]"
            a = validate._as_float_array(item, "BOLD", src)
            lab = None
            if a.ndim != 2:
                validate.check_bold(a, n, source=src)
        raw.append(a)
        srcs.append(src)
        labs.append(lab)
    tr = _run_tr(tr, len(raw), srcs)
    if tr is None:
        raise ValueError(f"{srcs[0]}: TR (seconds) is required with BOLD; pass tr=")
    # every run in the first run's region order, then the SC's
    for i in range(1, len(raw)):
        if (labs[i] is None) != (labs[0] is None):
            raise ValueError(f"{srcs[i]}: some runs name their regions (header row) and some do not; "
                             f"give all runs in one format")
        if labs[i] is not None:
            idx = tables.match_labels(labs[i], labs[0], srcs[i], srcs[0])
            raw[i] = raw[i] if idx is None else raw[i][:, idx]
        elif raw[i].shape[1] != raw[0].shape[1]:
            raise ValueError(f"{srcs[i]}: {raw[i].shape[1]} regions, but {srcs[0]} has {raw[0].shape[1]}; "
                             f"all runs must have the same regions")
    lab = labs[0]
    if lab is not None and conn.labels is not None:
        idx = tables.match_labels(lab, conn.labels, srcs[0], f"the SC ({sources[0][3:] if sources else 'sc'})")
        if idx is not None:
            raw = [a[:, idx] for a in raw]
            notes.append(f"{name}: BOLD columns reordered to the SC's region order")
    elif lab is not None and len(lab) == n:
        conn = conn._replace(labels=lab)
        notes.append(f"{name}: region labels taken from the BOLD header (the SC has none; its rows are taken "
                     f"to be in this order)")
    for a, src in zip(raw, srcs):
        if a.shape[1] != n:
            validate.check_bold(a, n, source=src)  # the shape error (wrong N, transposed)
    raw, keep, na_notes = tables.apply_na(raw, srcs, conn.labels, na)
    notes.extend(na_notes)
    if not keep.all():
        drop = np.flatnonzero(~keep)
        names = [conn.labels[i] for i in drop] if conn.labels is not None else drop.tolist()
        ix = np.ix_(keep, keep)
        conn = conn._replace(
            sc=validate.check_sc(conn.sc[ix], source=f"{srcs[0]} (the SC after dropping regions without BOLD)"),
            lengths=None if conn.lengths is None else conn.lengths[ix],
            centres=None if conn.centres is None else conn.centres[keep],
            labels=None if conn.labels is None else tuple(x for x, k in zip(conn.labels, keep) if k))
        notes.append(f"{name}: regions {tables.listing(names)} (no BOLD coverage) dropped from the SC, lengths, "
                     f"centres and labels too; {int(keep.sum())} regions left")
    m = int(keep.sum())
    raw = [validate.check_bold(a, m, source=src) for a, src in zip(raw, srcs)]
    if len(raw) == 1:
        return conn, raw[0], (), tr
    if runs == "first":
        notes.append(f"{name}: using the first of {len(raw)} runs ({Path(srcs[0]).name})")
        return conn, raw[0], (), tr
    if runs == "concatenate":
        z = [(a - a.mean(axis=0)) / a.std(axis=0) for a in raw]
        notes.append(f"{name}: {len(raw)} runs z-scored per region and concatenated in time "
                     f"({sum(a.shape[0] for a in z)} frames; FCD windows may straddle run boundaries)")
        return conn, np.concatenate(z, axis=0), (), tr
    members = tuple(
        Subject(name=f"{name}/{_run_name(src, i)}", sc=conn.sc, tr=tr, bold=a, lengths=conn.lengths,
                labels=conn.labels, centres=conn.centres, source=src)
        for i, (a, src) in enumerate(zip(raw, srcs)))
    notes.append(f"{name}: {len(raw)} runs pooled (FC = mean of the runs' FCs; FCD = the runs' FCD distributions "
                 f"pooled, no window straddles a run boundary)")
    return conn, None, members, tr
