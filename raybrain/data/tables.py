"""Text tables as neuroimaging pipelines write them: CSV/TSV/whitespace, optional header row of
labels, optional first column of labels, BIDS missing values.

* Delimiter: a tab if the first line has one, else a comma if it has one, else whitespace.
  Quoted cells (``"Left-Hippocampus"``) are unquoted; ``#`` starts a comment; blank lines and a
  trailing delimiter on every line are ignored.
* Header: the first row is a header when one of its cells is neither a number nor a missing
  value (so a header of purely numeric labels, e.g. ``1 2 3``, is read as data).
* Label column (only where the caller allows one): the first column is a label column when one
  of its body cells is neither a number nor a missing value.
* Missing values: the cells ``n/a`` (BIDS), ``NA``, ``NaN``/``nan`` and empty cells are read as
  NaN and flagged in :attr:`Table.na`; what happens to them is the caller's policy. Any other
  non-numeric body cell is an error naming the file, the row and the column.
  :func:`apply_na` applies a time-series missing-value policy (error, drop frames, drop
  regions) to parsed runs.
* Atlas tables (:func:`read_atlas`) have text columns: region names, optional x, y, z and index.
* :func:`match_labels` reorders regions by name between files (same set of labels, or an error
  naming the missing and extra ones).

Errors are ``ValueError`` messages that start with the file path.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "NA_CELLS", "Table", "read_table", "read_rows", "read_atlas", "is_text", "apply_na", "match_labels",
    "check_unique", "listing",
]

#: cells read as missing values (compared lower-case, stripped)
NA_CELLS = frozenset({"n/a", "na", "nan", ""})


class Table(NamedTuple):
    """A parsed text table."""

    values: np.ndarray  # (R, C) float64 body, NaN at missing cells
    na: np.ndarray  # (R, C) bool, True where the cell was a missing value (n/a, NaN, empty)
    header: tuple[str, ...] | None  # one label per body column (a corner cell above a label column dropped)
    row_labels: tuple[str, ...] | None  # the first column's labels, when it is a label column
    lines: tuple[int, ...]  # the file line of each body row (1-based), for messages


def _is_na(cell: str) -> bool:
    return cell.strip().lower() in NA_CELLS


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def is_text(cell: str) -> bool:
    """A cell that is neither a number nor a missing value (a label)."""
    return not _is_na(cell) and not _is_number(cell)


def read_rows(p: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank, non-comment line."""
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read as text ({exc})") from None
    lines = [(i, ln.split("#", 1)[0].rstrip("\r\n")) for i, ln in enumerate(text.splitlines(), 1)]
    lines = [(i, ln) for i, ln in lines if ln.strip()]
    if not lines:
        raise ValueError(f"{p}: file holds no numbers")
    first = lines[0][1]
    delimiter = "\t" if "\t" in first else ("," if "," in first else None)
    if delimiter is None:
        rows = [(i, ln.split()) for i, ln in lines]
    else:
        reader = csv.reader(io.StringIO("\n".join(ln for _, ln in lines)), delimiter=delimiter)
        rows = [(i, [c.strip() for c in cells]) for (i, _), cells in zip(lines, reader)]
    if delimiter is not None and all(cells and cells[-1] == "" for _, cells in rows):
        rows = [(i, cells[:-1]) for i, cells in rows]  # a delimiter at the end of every line
    return rows


def _parse_body(p: Path, body: list[list[str]], lines: list[int], header, offset: int) -> tuple[np.ndarray, np.ndarray]:
    try:  # fast path: every cell a number ("nan" included), then with the missing cells as "nan"
        values = np.array(body, dtype=np.float64)
        return values, np.isnan(values)
    except ValueError:
        pass
    try:
        values = np.array([["nan" if c.strip().lower() in NA_CELLS else c for c in row] for row in body],
                          dtype=np.float64)
        return values, np.isnan(values)
    except ValueError:
        pass  # find the offending cell
    values = np.empty((len(body), len(body[0]) if body else 0))
    for r, cells in enumerate(body):
        for c, cell in enumerate(cells):
            if _is_na(cell):
                values[r, c] = np.nan
                continue
            try:
                values[r, c] = float(cell)
            except ValueError:
                name = f" ({header[c]!r})" if header is not None else ""
                raise ValueError(
                    f"{p}: cannot parse as a numeric table: data row {r + 1} (line {lines[r]}), column "
                    f"{c + 1 + offset}{name}: {cell!r} is not a number"
                ) from None
    return values, np.isnan(values)


def read_table(path, *, row_labels: bool = False) -> Table:
    """Parse the text table at ``path`` (module docstring); ``row_labels`` allows a first column
    of labels. The header, when there is one, has one label per body column: a header with one
    cell more than the body columns (the corner above a label column, or an unnamed index
    column) loses its first cell."""
    p = Path(path)
    rows = read_rows(p)
    header = None
    if any(is_text(c) for c in rows[0][1]):
        header = tuple(rows[0][1])
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{p}: cannot parse as a numeric table: a header row ({len(header)} labels) but no data rows")
    lines = [i for i, _ in rows]
    body = [cells for _, cells in rows]
    width = len(body[0])
    for i, cells in rows:
        if len(cells) != width:
            raise ValueError(
                f"{p}: cannot parse as a numeric table: line {i} has {len(cells)} cells, line {lines[0]} has {width}"
            )
    labels = None
    if row_labels and any(is_text(cells[0]) for cells in body):
        labels = tuple(cells[0] for cells in body)
        body = [cells[1:] for cells in body]
        width -= 1
    if header is not None:
        if len(header) == width + 1:
            header = header[1:]
        elif len(header) != width:
            raise ValueError(
                f"{p}: cannot parse as a numeric table: the header row has {len(header)} cells but the data rows "
                f"have {width} value columns"
            )
    if width == 0:
        raise ValueError(f"{p}: cannot parse as a numeric table: no numeric columns")
    values, na = _parse_body(p, body, lines, header, 1 if labels is not None else 0)
    return Table(values=values, na=na, header=header, row_labels=labels, lines=tuple(lines))


def check_unique(labels: Sequence[str], source: str) -> None:
    """Region labels used to match regions by name must be unique."""
    seen, dup = set(), []
    for x in labels:
        if x in seen and x not in dup:
            dup.append(x)
        seen.add(x)
    if dup:
        raise ValueError(f"{source}: duplicate region labels {dup[:10]}; regions cannot be matched by name")


def listing(items: Sequence, limit: int = 10) -> str:
    """``['a', 'b', ...]`` for messages, at most ``limit`` items shown."""
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def match_labels(have: Sequence[str], want: Sequence[str], source: str, other: str, *,
                 allow_extra: bool = False) -> np.ndarray | None:
    """Indices ``idx`` with ``have[idx] == want`` (None when already equal), for reordering the
    regions of ``source`` (labels ``have``) into the order of ``other`` (labels ``want``).
    Different sets of labels are an error naming ``source`` and the missing and extra labels
    (extra ones are selected away instead with ``allow_extra``)."""
    have, want = tuple(have), tuple(want)
    if have == want:
        return None
    check_unique(have, source)
    check_unique(want, other)
    pos = {x: i for i, x in enumerate(have)}
    missing = [x for x in want if x not in pos]
    extra = [] if allow_extra else [x for x in have if x not in set(want)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} of {other}'s regions {listing(missing)}")
        if extra:
            parts.append(f"has {len(extra)} region(s) {other} lacks {listing(extra)}")
        raise ValueError(f"{source}: region labels differ from {other}'s: {'; '.join(parts)}")
    return np.array([pos[x] for x in want], dtype=np.int64)


def apply_na(runs: list[np.ndarray], sources: list[str], labels, na: str):
    """The missing-value policy ``na`` (``"error"``, ``"drop-frames"``, ``"drop-regions"``; see
    :func:`raybrain.data.io.load_timeseries`) over one subject's (T, N) runs, NaN at missing cells,
    named ``sources`` in messages: (runs, kept-regions mask (N,), notes)."""
    n = runs[0].shape[1]
    names = list(labels) if labels is not None else list(range(n))
    keep = np.ones(n, dtype=bool)
    notes = []
    if na == "drop-regions":
        empty = np.zeros(n, dtype=bool)
        for a in runs:
            empty |= np.all(np.isnan(a), axis=0)
        if empty.all():
            raise ValueError(f"{sources[0]}: every region is entirely n/a; no BOLD left")
        if empty.any():
            keep = ~empty
            notes.append(f"{Path(sources[0]).name}: dropped {int(empty.sum())} region(s) that are entirely n/a "
                         f"(no coverage) {listing([names[i] for i in np.flatnonzero(empty)])}")
    out = []
    for a, src in zip(runs, sources):
        a = a[:, keep]
        bad = np.isnan(a)
        if not bad.any():
            out.append(a)
            continue
        kept = [names[i] for i in np.flatnonzero(keep)]
        regions, frames = np.flatnonzero(bad.any(axis=0)), np.flatnonzero(bad.any(axis=1))
        if na == "error":
            f0, r0 = (int(i) for i in np.argwhere(bad)[0])
            empty = np.flatnonzero(bad.all(axis=0))
            whole = f", {empty.size} of them entirely n/a {listing([kept[i] for i in empty])}" \
                if empty.size else ""
            raise ValueError(
                f"{src}: BOLD must be finite, found {int(bad.sum())} missing (n/a or NaN) cells in {len(regions)} "
                f"region(s) {listing([kept[i] for i in regions])}{whole} and {len(frames)} frame(s) "
                f"(0-based) {listing(frames.tolist())} (first at frame {f0}, region {r0}); pass na='drop-frames' to "
                f"drop frames with missing cells (censored volumes) or na='drop-regions' to drop regions that are "
                f"entirely n/a (no coverage) and then such frames"
            )
        empty = np.flatnonzero(bad.all(axis=0))
        if empty.size:
            raise ValueError(
                f"{src}: {empty.size} region(s) are entirely n/a (no coverage) "
                f"{listing([kept[i] for i in empty])}: dropping frames cannot help; pass na='drop-regions' "
                f"to drop them (and the same regions from the SC)"
            )
        out.append(a[~bad.any(axis=1)])
        notes.append(f"{Path(src).name}: dropped {len(frames)} of {a.shape[0]} frames with n/a cells "
                     f"(frames {listing(frames.tolist())})")
    return out, keep, notes


#: atlas-table columns that hold the region names, in order of preference (lower-case)
NAME_COLUMNS = ("name", "label", "labels", "region", "region_name", "roi", "roi_name")


def read_atlas(path) -> tuple[list[str], list | None, list | None]:
    """The rows of an atlas table (:func:`raybrain.data.io.load_atlas`): names, centres (x, y, z
    per row) or None, index per row or None; unvalidated, in file order."""
    p = Path(path)
    rows = read_rows(p)
    first = [c.strip().lower() for c in rows[0][1]]
    name_col = next((first.index(c) for c in NAME_COLUMNS if c in first), None)
    if name_col is not None:
        cols = {c: i for i, c in enumerate(first)}
        xyz = [cols.get(c) for c in ("x", "y", "z")]
        if any(i is None for i in xyz) and any(i is not None for i in xyz):
            raise ValueError(f"{p}: give all three centre columns x, y, z or none (columns: {rows[0][1]})")
        xyz = None if xyz[0] is None else xyz
        index_col = cols.get("index")
        rows = rows[1:]
    else:
        width = len(rows[0][1])
        xyz = None if width == 1 else [width - 3, width - 2, width - 1]
        if width not in (1, 4, 5) or (xyz and any(is_text(rows[0][1][i]) for i in xyz)):
            raise ValueError(f"{p}: no name/label column: give a header with a 'name' (or 'label') column and "
                             f"optional x, y, z columns, or rows 'label x y z'; first row: {rows[0][1]}")
        name_col, index_col = (1, 0) if width == 5 else (0, None)
    if not rows:
        raise ValueError(f"{p}: no regions listed")
    names, centres, index = [], [], []
    for line, cells in rows:
        need = max([name_col] + (xyz or []) + ([index_col] if index_col is not None else [])) + 1
        if len(cells) < need:
            raise ValueError(f"{p}: line {line} has {len(cells)} cells, expected at least {need}")
        names.append(cells[name_col].strip())
        try:
            if xyz is not None:
                vals = [cells[i].strip() for i in xyz]
                missing = all(v.lower() in ("n/a", "nan", "") for v in vals)  # BIDS n/a: centre unknown
                centres.append(None if missing else [float(v) for v in vals])
            if index_col is not None:
                index.append(float(cells[index_col]))
        except ValueError:
            raise ValueError(f"{p}: line {line}: index and coordinates must be numbers, got {cells}") from None
        if not names[-1]:
            raise ValueError(f"{p}: line {line}: empty region name")
    if xyz is not None and all(c is None for c in centres):
        centres = None  # every centre n/a: the atlas has labels only
    elif xyz is not None and any(c is None for c in centres):
        raise ValueError(f"{p}: centres are n/a for {sum(c is None for c in centres)} of {len(centres)} regions; "
                         "give x, y, z for every region or for none")
    return names, (centres if xyz is not None else None), (index if index_col is not None else None)
