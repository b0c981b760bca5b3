"""Loaders for user data: matrices from .npy/.npz/.csv/.txt/.mat files, TVB connectivity zips,
and whole subjects (SC + optional BOLD and lengths).

Every problem (missing or unreadable file, wrong key, bad shape, NaN, ...) is a ``ValueError``
whose message starts with the file path.
"""
from __future__ import annotations

import bz2
import io
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from raybrain.data import validate
from raybrain.data.subject import Subject

__all__ = ["Connectivity", "load_matrix", "load_tvb_connectivity", "load_user_subject"]

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


# ------------------------------------------------------------------ subject
def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


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
) -> Subject:
    """Build a validated ``Subject`` from user files (paths; arrays are accepted too).

    ``sc`` is a matrix file (see ``load_matrix``) or a TVB connectivity ``.zip`` (then its tract
    lengths and labels are used unless ``lengths``/``labels`` are given). ``bold`` is a (T, N)
    file, time first. ``tr`` (seconds) is required with BOLD; without BOLD it defaults to
    ``DEFAULT_TR_WITHOUT_BOLD`` (it then only sets the sampling of simulated BOLD).
    ``*_key`` select variables in .mat/.npz files. ``name`` defaults to the SC file's stem.
    """
    sources: list[str] = []
    conn_lengths = conn_labels = None
    if _is_path(sc):
        sc_src = str(Path(os.fspath(sc)).expanduser())
        sources.append(f"sc={sc_src}")
        if Path(sc_src).suffix.lower() == ".zip":
            if sc_key is not None:
                raise ValueError(f"{sc_src}: sc_key does not apply to a TVB connectivity zip")
            conn = load_tvb_connectivity(sc_src)
            sc_arr, conn_lengths, conn_labels = conn.sc, conn.lengths, conn.labels
        else:
            sc_arr = validate.check_sc(load_matrix(sc_src, key=sc_key), source=sc_src)
        default_name = Path(sc_src).stem
    else:
        sc_arr = validate.check_sc(sc, source="sc")
        default_name = "subject"
    n = sc_arr.shape[0]

    len_arr = conn_lengths
    if lengths is not None:
        if _is_path(lengths):
            len_src = str(Path(os.fspath(lengths)).expanduser())
            sources.append(f"lengths={len_src}")
            len_arr = validate.check_lengths(load_matrix(len_src, key=lengths_key), n, source=len_src)
        else:
            len_arr = validate.check_lengths(lengths, n, source="lengths")

    bold_arr = None
    bold_src = "bold"
    if bold is not None:
        if _is_path(bold):
            bold_src = str(Path(os.fspath(bold)).expanduser())
            sources.append(f"bold={bold_src}")
            bold_arr = validate.check_bold(load_matrix(bold_src, key=bold_key), n, source=bold_src)
        else:
            bold_arr = validate.check_bold(bold, n, source="bold")
        if tr is None:
            raise ValueError(f"{bold_src}: TR (seconds) is required with BOLD; pass tr=")
    tr_val = validate.check_tr(DEFAULT_TR_WITHOUT_BOLD if tr is None else tr, source="tr")

    label_tuple = validate.check_labels(labels if labels is not None else conn_labels, n, source="labels")
    return Subject(
        name=name if name is not None else default_name,
        sc=sc_arr,
        tr=tr_val,
        bold=bold_arr,
        lengths=len_arr,
        labels=label_tuple,
        source=", ".join(sources) if sources else "arguments",
    )
