"""Bad-input catalogue (issue 5, items 4 and 5): 96 catalogued rows, one per bad input.

Every row feeds one bad input to raybrain and checks how it ends:

* **error** rows run the command line in-process (``raybrain.cli.main``): exit status 2, stderr
  exactly one line ``raybrain: error: …`` naming the input (file, option or config key path) and
  what is wrong, no traceback, nothing on stdout. Data files go through ``raybrain simulate --sc
  FILE --bold FILE --tr X``, configs through ``raybrain run CONFIG.yaml``, results through
  ``raybrain analyze`` / ``raybrain resume``. Neither Ray (``run_experiment``) nor a simulation
  (``Objective.evaluate``) may start: both are replaced by tripwires;
* **divergence** rows: a finite worst-case loss with ``valid=False`` and ``diverged=True`` in the
  record, never an exception;
* every row: the earlier results on disk (an experiment's results directory, an earlier
  ``simulate --out`` folder) are byte-for-byte unchanged, and a failed write leaves no partial
  files.

The "safe defaults" (issue 5, item 5) are checked too: configs are read with ``yaml.safe_load``
(a ``!!python/object`` tag is refused and never executed), user ``.npy``/``.npz`` files are
loaded with ``allow_pickle=False`` (object arrays and pickles are refused and never executed),
and nothing under ``raybrain/data`` calls ``pickle``.

Rows that need an unreadable or unwritable path made with ``chmod`` are skipped as root (root
ignores permissions); each has a root-proof sibling (a directory or a regular file in the way).
No row starts Ray; the module runs in a few seconds.
"""
from __future__ import annotations

import ast
import copy
import errno
import hashlib
import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
import yaml

import raybrain
from raybrain.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
PACKAGE = Path(raybrain.__file__).resolve().parent
N = 6  # regions of the user data
T = 200  # frames of the user BOLD
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_permissions = pytest.mark.skipif(AS_ROOT, reason="root ignores file permissions")


# ---------------------------------------------------------------------------------- data files
def _sc():
    a = np.random.default_rng(0).random((N, N))
    a = (a + a.T) / 2
    np.fill_diagonal(a, 0.0)
    return a


def _bold(frames=T, regions=N, seed=1):
    return np.random.default_rng(seed).standard_normal((frames, regions))


def _with(a, *entries):
    """``a`` with entries set: ``_with(sc, ((2, 5), -0.1), ...)``."""
    a = a.copy()
    for idx, v in entries:
        a[idx] = v
    return a


class _OpensAFile:
    """Unpickling this creates a marker file: a pickle that must never be loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_pickle(p: Path):
    with open(p, "wb") as f:
        pickle.dump(_OpensAFile(p.parent / "PICKLE_WAS_LOADED"), f)


def _write_npz_with_object(p: Path):
    np.savez(p, sc=np.array([_OpensAFile(p.parent / "PICKLE_WAS_LOADED")], dtype=object))


def _zip_garbage(p: Path):
    p.write_bytes(b"PK\x03\x04 this is not a zip archive")


def _tvb_zip_bad_lengths(p: Path):
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("weights.txt", "\n".join(" ".join(f"{x:g}" for x in row) for row in _sc()))
        z.writestr("tract_lengths.txt", "\n".join(" ".join("10" for _ in range(N - 1)) for _ in range(N - 1)))
        z.writestr("centres.txt", "\n".join(f"r{i} 0 0 {i}" for i in range(N)))


def _unreadable(p: Path):
    np.save(p, _sc())
    p.chmod(0)


FILES: dict[str, Callable[[Path], None]] = {
    "sc.npy": lambda p: np.save(p, _sc()),
    "bold.npy": lambda p: np.save(p, _bold()),
    "sc_nonsquare.npy": lambda p: np.save(p, _sc()[:, :-1]),
    "sc_nan.npy": lambda p: np.save(p, _with(_sc(), ((1, 2), np.nan))),
    "sc_negative.npy": lambda p: np.save(p, _with(_sc(), ((2, 5), -0.1), ((3, 1), -0.2), ((4, 0), -0.05))),
    "sc_zero.npy": lambda p: np.save(p, np.zeros((N, N))),
    "sc_1d.npy": lambda p: np.save(p, np.ones(N)),
    "sc_one_region.npy": lambda p: np.save(p, np.ones((1, 1))),
    "sc.json": lambda p: p.write_text(json.dumps(_sc().tolist())),
    "sc_words.csv": lambda p: p.write_text("a,b,c\n1,2,3\n"),
    "sc_two_arrays.npz": lambda p: np.savez(p, sc=_sc(), lengths=_sc()),
    "sc_object.npy": lambda p: np.save(p, np.array([{"weights": 1}], dtype=object), allow_pickle=True),
    "sc_pickle.npy": _write_pickle,
    "sc_object.npz": _write_npz_with_object,
    "sc_corrupt.npy": lambda p: p.write_bytes(b"\x93NUMPY garbage that is no array header"),
    "sc_corrupt.mat": lambda p: p.write_bytes(b"MATLAB 5.0 MAT-file garbage" * 8),
    "sc_corrupt.zip": _zip_garbage,
    "sc_tvb_bad_lengths.zip": _tvb_zip_bad_lengths,
    "sc_directory.npy": lambda p: p.mkdir(),
    "sc_unreadable.npy": _unreadable,
    "bold_nan.npy": lambda p: np.save(p, _with(_bold(), ((3, 2), np.nan))),
    "bold_7_regions.npy": lambda p: np.save(p, _bold(regions=N + 1)),
    "bold_transposed.npy": lambda p: np.save(p, _bold().T),
    "bold_constant.npy": lambda p: np.save(p, _with(_bold(), ((slice(None), 4), 1.5))),
    "bold_4_frames.npy": lambda p: np.save(p, _bold(frames=4)),
    "bold_50_frames.npy": lambda p: np.save(p, _bold(frames=50)),
    "lengths_5x5.npy": lambda p: np.save(p, np.full((N - 1, N - 1), 10.0)),
    "a_regular_file": lambda p: p.write_text("not a directory\n"),
    "read_only_dir": lambda p: (p.mkdir(), p.chmod(0o555)),
}


# ---------------------------------------------------------------------------------- workspace
class WS:
    """One row's scratch folder: data files made on demand, a config writer, and the results of
    an earlier experiment (``results/quickstart``) that no bad input may touch."""

    def __init__(self, tmp: Path, base: dict):
        self.tmp, self.base = tmp, base
        self.results = tmp / "results"
        self.earlier = self.results / "quickstart"

    def path(self, name: str) -> str:
        p = self.tmp / name
        if not (p.exists() or p.is_symlink()):
            FILES[name](p)
        return str(p)

    def config(self, edit=None, text=None, name: str = "exp.yaml") -> str:
        """Write the quickstart config edited by ``edit(d, self)``, or ``text`` (a string or a
        function of the workspace), to ``name``; its path."""
        p = self.tmp / name
        if callable(text):
            text = text(self)
        if text is None:
            d = copy.deepcopy(self.base)
            d["storage"] = str(self.results)
            if edit is not None:
                edit(d, self)
            text = yaml.safe_dump(d, sort_keys=False)
        p.write_text(text)
        return str(p)


@pytest.fixture(scope="module")
def quickstart():
    return yaml.safe_load(QUICKSTART.read_text())


@pytest.fixture(scope="module")
def earlier_experiment_json(quickstart, tmp_path_factory):
    """experiment.json of an earlier, *different* experiment of the same name (budget 32)."""
    from raybrain.experiment import load_config

    d = copy.deepcopy(quickstart)
    d["budget"]["evaluations"] = 32
    p = tmp_path_factory.mktemp("earlier") / "quickstart.yaml"
    p.write_text(yaml.safe_dump(d))
    return load_config(p).model_dump_json()


@pytest.fixture
def ws(tmp_path, quickstart, earlier_experiment_json):
    from raybrain.results import ResultsWriter

    w = WS(tmp_path, quickstart)
    w.earlier.mkdir(parents=True)
    (w.earlier / "experiment.json").write_text(earlier_experiment_json)
    writer = ResultsWriter(w.earlier, "quickstart")
    meta = dict(mode="population", subject="hcp/101309", optimizer="random", seed=0, fidelity=1, duration=172.8,
                dt=1e-3, params=["G", "sigma"])
    writer.write_generation("hcp-101309__random__seed0", 0, [
        {"G": 1.0, "sigma": 0.005, "loss": 0.9, "valid": True},
        {"G": 2.0, "sigma": 0.002, "loss": 0.7, "valid": True}], meta)
    writer.write_run_summary("hcp-101309__random__seed0", {"best_loss": 0.7})
    yield w
    for p in tmp_path.rglob("*"):  # let pytest clean up what chmod locked
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.fixture(autouse=True)
def tripwires(monkeypatch):
    """Ray and the simulator must not start for a bad input: both raise AssertionError (which the
    CLI does not catch) unless a row re-enables the simulator."""
    import raybrain.objective
    import raybrain.tuning as tuning
    from raybrain.tuning import driver

    def ray_starts(*a, **k):
        raise AssertionError("Ray was started for a bad input")

    def simulates(*a, **k):
        raise AssertionError("a simulation was started for a bad input")

    monkeypatch.setattr(tuning, "run_experiment", ray_starts)  # where the CLI looks it up
    monkeypatch.setattr(driver, "run_experiment", ray_starts)
    monkeypatch.setattr(driver, "_init_ray", ray_starts)
    monkeypatch.setattr(raybrain.objective.Objective, "evaluate", simulates)
    return monkeypatch


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its size and content hash (temporary files included)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(code: int, out: str, err: str, needles) -> None:
    assert code == 2, (code, out, err)
    assert err.startswith("raybrain: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert "Traceback" not in err, err
    assert out == "", f"stdout should be empty on an input error: {out!r}"
    for n in needles:
        assert n in err, f"{n!r} missing from {err!r}"


# ---------------------------------------------------------------------------------- rows
class Row(NamedTuple):
    id: str
    check: Callable  # (ws, capsys, monkeypatch) -> None
    marks: tuple = ()


def _cli(argv_of: Callable, needles=(), setup=None, post=None, watch=None) -> Callable:
    """A row that runs ``main(argv_of(ws))`` and expects a one-line error holding ``needles``
    (``{tmp}`` in a needle is the row's folder); ``watch(ws)`` lists extra folders that must not
    change (the earlier results always are watched)."""
    def check(ws, capsys, monkeypatch):
        if setup is not None:
            setup(ws, monkeypatch)
        argv = argv_of(ws)
        watched = [ws.results] + (watch(ws) if watch else [])
        before = [snapshot(w) for w in watched]
        code = main(argv)
        out, err = capsys.readouterr()
        one_line_error(code, out, err, [n.format(tmp=ws.tmp) for n in needles])
        assert [snapshot(w) for w in watched] == before, "earlier results changed"
        if post is not None:
            post(ws)
    return check


SIM_DEFAULTS = {"--sc": "sc.npy", "--bold": "bold.npy", "--tr": "1", "--duration": "20", "--burn-in": "0",
                "--dt": "1e-3", "--window": "5"}


def _simulate_argv(ws: WS, opts: dict) -> list[str]:
    argv = ["simulate", "--json"]
    for k, v in {**SIM_DEFAULTS, **opts}.items():
        if v is None:
            continue
        if isinstance(v, str) and "{tmp}" in v:
            v = v.format(tmp=ws.tmp)
        elif k in ("--sc", "--bold"):
            v = ws.path(v)
        argv += [k, v] if v is not True else [k]
    return argv


def sim(id, *needles, marks=(), post=None, setup=None, watch=None, **opts) -> Row:
    """``raybrain simulate`` with the default user files overridden by ``opts`` (``sc=``,
    ``bold=``, ``tr=``…; None drops an option)."""
    opts = {"--" + k.replace("_", "-"): v for k, v in opts.items()}
    return Row(f"simulate-{id}", _cli(lambda ws: _simulate_argv(ws, opts), needles, setup, post, watch), marks)


def cfg(id, edit=None, *needles, text=None, marks=(), post=None, setup=None) -> Row:
    """``raybrain run exp.yaml`` with the quickstart config edited by ``edit(d, ws)`` (or ``text``);
    the message must name the config file."""
    return Row(f"run-{id}", _cli(lambda ws: ["run", ws.config(edit, text), "--quiet"], ("exp.yaml",) + needles,
                                 setup, post), marks)


def cli(id, argv_of, *needles, marks=(), setup=None, post=None, watch=None) -> Row:
    return Row(id, _cli(argv_of, needles, setup, post, watch), marks)


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(d, ws):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value(ws) if callable(value) else value
    return edit


def _user_subject(**files):
    """subjects: one user subject with the default files overridden (names in FILES)."""
    def edit(d, ws):
        entry = {"name": "me", "sc": "sc.npy", "bold": "bold.npy", "tr": 0.72, **files}
        for k in ("sc", "bold", "lengths"):
            if isinstance(entry.get(k), str) and entry[k] in FILES:
                ws.path(entry[k])
        d["subjects"] = {"paths": [entry]}
    return edit


def _no_marker(ws):
    assert not (ws.tmp / "PICKLE_WAS_LOADED").exists(), "a pickle was loaded"
    assert not (ws.tmp / "YAML_TAG_WAS_RUN").exists(), "a YAML python tag was executed"


def _storage(name_of):
    return _set("storage", lambda ws: name_of(ws))


def _file_in_the_way(ws, monkeypatch):
    (ws.tmp / "st").mkdir()
    (ws.tmp / "st" / "quickstart").write_text("a regular file where the results folder goes\n")


def _earlier_out(ws, monkeypatch):
    """An earlier ``simulate --out`` folder with its three files."""
    out = ws.tmp / "out"
    out.mkdir()
    for name in ("bold.npy", "fc.npy", "record.json"):
        (out / name).write_text(f"earlier {name}\n")


def _disk_full_at_second_save(ws, monkeypatch):
    """Simulate for real, then fail writing fc.npy (the second file) as a full disk would."""
    monkeypatch.undo()  # the simulator is allowed here
    _arm_ray_tripwire(monkeypatch)
    real_save = np.save

    def save(file, *a, **k):
        if ".fc.npy." in os.path.basename(getattr(file, "name", str(file))):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, *a, **k)

    monkeypatch.setattr(np, "save", save)


def _arm_ray_tripwire(monkeypatch):
    import raybrain.tuning as tuning
    from raybrain.tuning import driver

    def ray_starts(*a, **k):
        raise AssertionError("Ray was started for a bad input")

    monkeypatch.setattr(tuning, "run_experiment", ray_starts)  # where the CLI looks it up
    monkeypatch.setattr(driver, "run_experiment", ray_starts)
    monkeypatch.setattr(driver, "_init_ray", ray_starts)


def _no_partial_out(ws):
    out = ws.tmp / "out"
    if out.exists():
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"


def _damaged_parquet(ws, monkeypatch):
    run = ws.earlier / "evaluations" / "hcp-101309__random__seed0"
    (run / "gen-000001-f1.parquet").write_bytes(b"PAR1 truncated")


def _damaged_summary(ws, monkeypatch):
    (ws.earlier / "runs" / "other-run.json").write_text("{not json")


def _damaged_experiment_json(ws, monkeypatch):
    (ws.earlier / "experiment.json").write_text('{"name": "quickstart", ')


def _hand_edited_experiment_json(ws, monkeypatch):
    d = json.loads((ws.earlier / "experiment.json").read_text())
    d["budget"]["evaluationz"] = d["budget"].pop("evaluations")
    (ws.earlier / "experiment.json").write_text(json.dumps(d))


def _renamed_results(ws, monkeypatch):
    import shutil

    shutil.copytree(ws.earlier, ws.tmp / "renamed-folder")


def _diverges(model: str, param: str, worst: float = 10.0) -> Callable:
    """``raybrain simulate --json --param …`` diverges: exit 0, finite worst-case loss, flagged."""
    def check(ws, capsys, monkeypatch):
        monkeypatch.undo()
        _arm_ray_tripwire(monkeypatch)
        code = main(_simulate_argv(ws, {"--model": model, "--param": param}))
        out, err = capsys.readouterr()
        assert code == 0 and err == "", err
        rec = json.loads(out)
        assert rec["loss"] == worst and math.isfinite(rec["loss"])
        assert rec["valid"] is False and rec["diverged"] is True
        comps = [k for k in ("fc_corr", "fc_corr_cost", "fc_mean_diff", "fcd_ks") if k in rec]
        assert comps and all(math.isfinite(rec[k]) for k in comps), rec
    return check


def _rww_saturates(ws, capsys, monkeypatch):
    """rww at G = 1e6: the gating variables saturate, so nothing diverges numerically (valid,
    finite loss), but the firing rates are absurd and the record says so (plausible=False)."""
    monkeypatch.undo()
    _arm_ray_tripwire(monkeypatch)
    code = main(_simulate_argv(ws, {"--param": "G=1e6"}))
    out, err = capsys.readouterr()
    assert code == 0 and err == "", err
    rec = json.loads(out)
    assert math.isfinite(rec["loss"]) and rec["plausible"] is False and rec["rate_mean"] > 3.3


def _objective_batch_isolates_divergence(ws, capsys, monkeypatch):
    """Objective API: one diverging candidate in a batch gets the worst loss and the flags, the
    other one is scored normally."""
    monkeypatch.undo()
    _arm_ray_tripwire(monkeypatch)
    from raybrain.data import Subject
    from raybrain.integrate import SimulationSettings
    from raybrain.models import get_model
    from raybrain.objective import Objective
    from raybrain.parametrisation import Global

    subject = Subject(name="user", sc=_sc(), bold=_bold(), tr=1.0)
    model = get_model("hopf")
    par = Global(model, names=("G",), bounds_override={"G": (0.0, 1e5)})
    obj = Objective(subject, model, par, "pfic", SimulationSettings(duration=20.0, burn_in=0.0, dt=1e-3),
                    window=5)
    good, bad = obj.evaluate(np.array([[0.5], [1e4]]), seed=0)
    assert good["valid"] is True and good["diverged"] is False and good["loss"] < obj.loss.worst
    assert bad["valid"] is False and bad["diverged"] is True and bad["loss"] == obj.loss.worst
    assert all(math.isfinite(bad[k]) for k in ("fc_corr", "fc_corr_cost", "fc_mean_diff", "fcd_ks"))


ROWS: list[Row] = [
    # -- structural connectivity (simulate --sc FILE) ---------------------------------------
    sim("sc-not-square", "sc_nonsquare.npy", "SC must be square", "(6, 5)", sc="sc_nonsquare.npy"),
    sim("sc-nan", "sc_nan.npy", "SC must be finite", "(1, 2)", sc="sc_nan.npy"),
    sim("sc-negative", "sc_negative.npy", "non-negative", "3 negative entries", "-0.2", sc="sc_negative.npy"),
    sim("sc-all-zero", "sc_zero.npy", "all zero", sc="sc_zero.npy"),
    sim("sc-1d", "sc_1d.npy", "2-D", sc="sc_1d.npy"),
    sim("sc-one-region", "sc_one_region.npy", "at least 2 regions", sc="sc_one_region.npy"),
    sim("sc-unsupported-suffix", "sc.json", "unsupported file type", sc="sc.json"),
    sim("sc-csv-not-numbers", "sc_words.csv", "cannot parse as a numeric table", sc="sc_words.csv"),
    sim("sc-npz-ambiguous", "sc_two_arrays.npz", "ambiguous", sc="sc_two_arrays.npz"),
    sim("sc-missing-file", "{tmp}/no_such_sc.npy", "no such file", sc="{tmp}/no_such_sc.npy"),
    sim("sc-is-a-directory", "sc_directory.npy", "not a regular file", sc="sc_directory.npy"),
    sim("sc-unreadable-permissions", "sc_unreadable.npy", "Permission denied", sc="sc_unreadable.npy",
        marks=(needs_permissions,)),
    sim("sc-corrupt-npy", "sc_corrupt.npy", "cannot read as .npy", sc="sc_corrupt.npy"),
    sim("sc-corrupt-mat", "sc_corrupt.mat", "cannot read as a MATLAB .mat file", sc="sc_corrupt.mat"),
    sim("sc-corrupt-zip", "sc_corrupt.zip", "not a readable zip file", sc="sc_corrupt.zip"),
    sim("sc-tvb-zip-lengths-shape", "tract_lengths.txt", "lengths must have the same shape as SC", "(5, 5)",
        sc="sc_tvb_bad_lengths.zip"),
    sim("sc-npy-object-array-refused", "sc_object.npy", "pickled Python objects", "never loads", sc="sc_object.npy",
        post=_no_marker),
    sim("sc-npy-pickle-refused-not-run", "sc_pickle.npy", "pickled Python objects", sc="sc_pickle.npy",
        post=_no_marker),
    sim("sc-npz-object-array-refused-not-run", "sc_object.npz", "pickled Python objects", sc="sc_object.npz",
        post=_no_marker),
    # -- BOLD and TR -------------------------------------------------------------------------
    sim("bold-nan", "bold_nan.npy", "BOLD must be finite", "frame 3, region 2", bold="bold_nan.npy"),
    sim("bold-region-count-mismatch", "bold_7_regions.npy", "7 regions", "SC has 6", bold="bold_7_regions.npy"),
    sim("bold-transposed", "bold_transposed.npy", "transpose", bold="bold_transposed.npy"),
    sim("bold-constant-region", "bold_constant.npy", "zero variance", "[4]", bold="bold_constant.npy"),
    sim("bold-shorter-than-fcd-window", "bold_4_frames.npy", "4 frames", "window 5", bold="bold_4_frames.npy"),
    sim("bold-missing-file", "{tmp}/no_such_bold.npy", "no such file", bold="{tmp}/no_such_bold.npy"),
    sim("bold-without-sc", "--bold", "--sc", sc=None),
    sim("sc-without-bold", "--sc", "needs --bold", bold=None),
    sim("tr-zero", "--tr", "> 0", tr="0"),
    sim("tr-negative", "--tr", "> 0", "-0.72", tr="-0.72"),
    sim("tr-nan", "--tr", "finite", tr="nan"),
    sim("tr-missing", "--bold", "bold.npy", "needs --tr", tr=None),
    sim("tr-not-a-number", "--tr", "invalid float value", tr="0.72s"),
    # -- simulation settings and model ---------------------------------------------------------
    sim("duration-negative", "'duration'", "positive", duration="-5"),
    sim("duration-shorter-than-fcd-window", "--duration 3 s", "window 5", duration="3"),
    sim("burn-in-negative", "'burn_in'", ">= 0", burn_in="-1"),
    sim("dt-zero", "'dt'", dt="0"),
    sim("dt-above-tr", "'dt'", "must not exceed the TR", dt="5"),
    sim("window-too-small", "--window", ">= 2", window="1"),
    sim("sc-max-zero", "--sc-max", "positive", sc_max="0"),
    sim("sc-max-negative", "--sc-max", "positive", sc_max="-0.2"),
    sim("unknown-model", "unknown model 'rwx'", "did you mean 'rww'", model="rwx"),
    sim("unknown-loss", "unknown loss 'pfc'", "did you mean 'pfic'", loss="pfc"),
    sim("unknown-parameter", "'Gx'", "did you mean 'G'", param="Gx=1"),
    sim("parameter-not-a-number", "--param", "G: 'two'", param="G=two"),
    sim("parameter-nan", "--param", "G: 'nan' is not a finite number", param="G=nan"),
    sim("parameter-without-value", "--param", "NAME=VALUE", param="G"),
    sim("parameter-set-by-fic", "w_IE", "--no-fic", param="w_IE=1"),
    Row("simulate-unknown-subject", _cli(lambda ws: ["simulate", "--subject", "hcp/1"],
                                          ("unknown bundled subject 'hcp/1'",))),
    # -- simulate --out into an unwritable place: nothing simulated, nothing written ------------
    Row("simulate-out-under-a-regular-file",
        _cli(lambda ws: _simulate_argv(ws, {"--out": ws.path("a_regular_file") + "/out"}),
             ("--out", "a_regular_file", "is a regular file"), watch=lambda ws: [ws.tmp])),
    Row("simulate-out-is-a-regular-file",
        _cli(lambda ws: _simulate_argv(ws, {"--out": ws.path("a_regular_file")}),
             ("--out", "a_regular_file", "is a regular file"), watch=lambda ws: [ws.tmp])),
    Row("simulate-out-under-read-only-dir",
        _cli(lambda ws: _simulate_argv(ws, {"--out": ws.path("read_only_dir") + "/out"}),
             ("--out", "read_only_dir", "Permission denied"), watch=lambda ws: [ws.tmp]),
        (needs_permissions,)),
    Row("simulate-out-disk-full-keeps-earlier-files",
        _cli(lambda ws: _simulate_argv(ws, {"--out": str(ws.tmp / "out")}),
             ("--out", "{tmp}/out", "No space left on device", "nothing was saved"),
             setup=lambda ws, mp: (_earlier_out(ws, mp), _disk_full_at_second_save(ws, mp)),
             post=_no_partial_out, watch=lambda ws: [ws.tmp / "out"])),
    Row("simulate-out-disk-full-creates-nothing",
        _cli(lambda ws: _simulate_argv(ws, {"--out": str(ws.tmp / "new" / "out")}),
             ("--out", "No space left on device"), setup=_disk_full_at_second_save,
             post=lambda ws: (_no_partial_out(ws), _assert_absent(ws.tmp / "new" / "out")))),
    # -- divergence: a finite worst-case loss, flagged ------------------------------------------
    Row("diverge-simulate-hopf-G-1e4", _diverges("hopf", "G=1e4")),
    Row("diverge-simulate-hopf-sigma-1e4", _diverges("hopf", "sigma=1e4")),
    Row("diverge-objective-batch-one-candidate", _objective_batch_isolates_divergence),
    Row("saturate-simulate-rww-G-1e6-implausible", _rww_saturates),
    # -- experiment configs (raybrain run CONFIG.yaml) ----------------------------------------
    cfg("unknown-key", _set("simulation", "fidelitees", 1), "simulation.fidelitees", "did you mean 'fidelities'"),
    cfg("wrong-type-int", _set("budget", "evaluations", "ten"), "budget.evaluations", "'ten'"),
    cfg("wrong-type-float", _set("simulation", "burn_in", "30s"), "simulation.burn_in", "'30s'"),
    cfg("bounds-reversed", _set("parametrisation", "bounds", "G", [2.5, 0.5]), "parametrisation.bounds.G",
        "bounds reversed"),
    cfg("zero-budget", _set("budget", "evaluations", 0), "budget.evaluations", "positive integer, got 0"),
    cfg("zero-wall-budget", _set("budget", "wall_s", 0), "budget.wall_s", "positive"),
    cfg("unknown-optimizer", _set("optimizers", 0, "name", "cmaa"), "optimizers[0].name", "unknown optimizer 'cmaa'",
        "did you mean 'cmaes'"),
    cfg("duplicate-optimizer-labels", _set("optimizers", 1, {"name": "random"}), "optimizers[1].label",
        "'random' is used by optimizers[0]"),
    cfg("unknown-model", _set("model", "name", "rwx"), "model.name", "unknown model 'rwx'"),
    cfg("unknown-subject", _set("subjects", "ids", ["hcp/10130"]), "subjects.ids[0]", "'hcp/10130'",
        "did you mean 'hcp/101309'"),
    cfg("negative-duration", _set("simulation", "fidelities", 0, "duration", -5), "simulation.fidelities[0].duration",
        "positive"),
    cfg("tr-zero", _user_subject(tr=0), "subjects.paths[0].tr", "positive"),
    cfg("missing-data-file", _user_subject(sc="no_such_sc.npy"), "subjects.paths[0].sc", "no_such_sc.npy"),
    cfg("data-file-is-a-directory", _user_subject(sc="sc_directory.npy"), "subjects.paths[0].sc", "sc_directory.npy"),
    cfg("data-file-corrupt", _user_subject(sc="sc_corrupt.npy"), "subjects.paths[0]", "sc_corrupt.npy",
        "cannot read as .npy"),
    cfg("sc-negative", _user_subject(sc="sc_negative.npy"), "subjects.paths[0] (me)", "sc_negative.npy",
        "3 negative entries"),
    cfg("lengths-shape-mismatch", _user_subject(lengths="lengths_5x5.npy"), "subjects.paths[0] (me)",
        "lengths_5x5.npy", "same shape as SC (6, 6)", "(5, 5)"),
    cfg("bold-shorter-than-fcd-window", _user_subject(bold="bold_50_frames.npy"), "subjects.paths[0] (me)",
        "bold_50_frames.npy", "50 frames", "window 60"),
    cfg("yaml-not-a-mapping", None, "mapping", "got list", text="- name: quickstart\n- storage: results\n"),
    cfg("yaml-empty", None, "mapping", "got NoneType", text="# nothing here\n"),
    cfg("yaml-syntax", None, "not valid YAML", "line 2", text="name: [quickstart\nstorage: results\n"),
    cfg("yaml-python-tag-refused-not-run", None, "not valid YAML", "python/object/apply",
        text=lambda ws: f"name: quickstart\nstorage: !!python/object/apply:builtins.open "
                        f"['{ws.tmp / 'YAML_TAG_WAS_RUN'}', 'w']\n",
        post=_no_marker),
    Row("run-yaml-binary", _cli(lambda ws: ["run", _binary(ws)], ("exp.yaml", "not a text (UTF-8) YAML file"))),
    Row("run-config-missing", _cli(lambda ws: ["run", str(ws.tmp / "exp.yaml")], ("exp.yaml", "file not found"))),
    Row("run-config-is-a-directory", _cli(lambda ws: ["run", str(ws.tmp)], ("{tmp}", "is a directory"))),
    Row("run-config-unreadable-permissions",
        _cli(lambda ws: ["run", _locked(ws.config())], ("exp.yaml", "Permission denied")), (needs_permissions,)),
    # -- unwritable results path: refused before Ray, nothing created -------------------------
    cfg("storage-under-a-regular-file", _storage(lambda ws: ws.path("a_regular_file") + "/results"), "storage",
        "a_regular_file", "is a regular file"),
    cfg("storage-results-folder-is-a-file", _storage(lambda ws: str(ws.tmp / "st")), "storage", "st/quickstart",
        "is a regular file", setup=_file_in_the_way),
    cfg("storage-under-read-only-dir", _storage(lambda ws: ws.path("read_only_dir") + "/results"), "storage",
        "read_only_dir", "Permission denied", marks=(needs_permissions,),
        post=lambda ws: _assert_absent(ws.tmp / "read_only_dir" / "results")),
    cfg("storage-holds-a-different-experiment", None, "storage", "results/quickstart",
        "already holds the results of a different experiment", "raybrain resume"),
    # -- results: analyze / resume --------------------------------------------------------------
    cli("analyze-missing-folder", lambda ws: ["analyze", str(ws.tmp / "no_results")], "no_results",
        "no such results directory"),
    cli("analyze-damaged-parquet", lambda ws: ["analyze", str(ws.earlier)], "gen-000001-f1.parquet",
        "cannot read this results file", setup=_damaged_parquet),
    cli("analyze-damaged-run-summary", lambda ws: ["analyze", str(ws.earlier)], "other-run.json", "not valid JSON",
        setup=_damaged_summary),
    cli("analyze-csv-under-a-regular-file",
        lambda ws: ["analyze", str(ws.earlier), "--csv", ws.path("a_regular_file") + "/table.csv"], "--csv",
        "a_regular_file", watch=lambda ws: [ws.tmp]),
    cli("analyze-csv-is-a-directory", lambda ws: ["analyze", str(ws.earlier), "--csv", str(ws.tmp)], "--csv",
        "is a directory", watch=lambda ws: [ws.tmp]),
    cli("resume-not-a-results-folder", lambda ws: ["resume", str(ws.tmp)], "{tmp}", "no experiment.json"),
    cli("resume-damaged-experiment-json", lambda ws: ["resume", str(ws.earlier)], "experiment.json",
        "not valid JSON", setup=_damaged_experiment_json),
    cli("resume-hand-edited-experiment-json", lambda ws: ["resume", str(ws.earlier)], "experiment.json",
        "budget.evaluationz", "unknown key", setup=_hand_edited_experiment_json),
    cli("resume-renamed-folder", lambda ws: ["resume", str(ws.tmp / "renamed-folder")], "renamed-folder",
        "'quickstart'", setup=_renamed_results, watch=lambda ws: [ws.tmp / "renamed-folder"]),
]


def _binary(ws) -> str:
    p = ws.tmp / "exp.yaml"
    p.write_bytes(b"\xff\xfe\x00name: quickstart")
    return str(p)


def _locked(path: str) -> str:
    Path(path).chmod(0)
    return path


def _assert_absent(p: Path) -> None:
    assert not p.exists(), f"{p} was created"


# ---------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=r.marks) for r in ROWS])
def test_bad_input(row, ws, capsys, tripwires):
    row.check(ws, capsys, tripwires)


def test_catalogue_ids_are_unique_and_counted_in_the_docstring():
    ids = [r.id for r in ROWS]
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    m = re.search(r"(\d+) catalogued rows", __doc__)
    assert m and int(m.group(1)) == len(ROWS), f"update the module docstring: {len(ROWS)} catalogued rows"


# -- the good paths next to the bad ones still get through ------------------------------------
def test_a_valid_config_reaches_ray_and_its_own_results_folder_is_accepted(ws, tripwires, quickstart, capsys):
    """The checks before Ray let a valid config through, also into a results folder that holds the
    same experiment but no records of it yet; run_experiment gets the config."""
    import shutil

    import raybrain.tuning as tuning

    from raybrain.experiment import load_config

    calls = []
    tripwires.setattr(tuning, "run_experiment", lambda cfg, **kw: (calls.append(cfg), (_ for _ in ()).throw(
        KeyboardInterrupt))[1])
    path = ws.config()
    (ws.earlier / "experiment.json").write_text(load_config(path).model_dump_json())
    for d in ("evaluations", "runs"):
        shutil.rmtree(ws.earlier / d)
    with pytest.raises(KeyboardInterrupt):
        main(["run", path, "--quiet"])
    assert len(calls) == 1 and calls[0].name == "quickstart"
    assert not list(ws.earlier.glob(".raybrain-write-test-*"))


def test_the_same_experiment_with_records_is_refused_before_ray(ws, tripwires, capsys):
    """A second execution of the same experiment into a folder with its records: one line, exit 2,
    naming the folder and both ways on; nothing is touched and Ray is never reached."""
    import raybrain.tuning as tuning

    from raybrain.experiment import load_config

    tripwires.setattr(tuning, "run_experiment", lambda cfg, **kw: pytest.fail("reached run_experiment"))
    path = ws.config()
    (ws.earlier / "experiment.json").write_text(load_config(path).model_dump_json())
    before = {p: p.stat().st_mtime_ns for p in ws.earlier.rglob("*")}
    assert main(["run", path, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(ws.earlier.resolve()) in err[0]
    assert "raybrain resume" in err[0] and "--overwrite" in err[0] and "records of 1 run(s)" in err[0]
    assert {p: p.stat().st_mtime_ns for p in ws.earlier.rglob("*")} == before


def test_resume_uses_the_folder_given_whatever_the_working_directory(ws, tripwires, monkeypatch, tmp_path_factory):
    """experiment.json may hold a relative storage; resume continues in the folder it was given."""
    import raybrain.tuning as tuning

    d = json.loads((ws.earlier / "experiment.json").read_text())
    d["storage"] = "results"
    (ws.earlier / "experiment.json").write_text(json.dumps(d))
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    seen = []
    tripwires.setattr(tuning, "run_experiment", lambda cfg, **kw: (seen.append((cfg, kw)), (_ for _ in ()).throw(
        KeyboardInterrupt))[1])
    with pytest.raises(KeyboardInterrupt):
        main(["resume", str(ws.earlier), "--quiet"])
    cfg, kw = seen[0]
    assert kw["resume"] is True
    assert Path(cfg.storage).resolve() / cfg.name == ws.earlier.resolve()


def test_simulate_out_writes_the_three_files(ws, capsys, monkeypatch):
    monkeypatch.undo()
    out = ws.tmp / "deep" / "out"
    assert main(_simulate_argv(ws, {"--out": str(out)})) == 0
    rec = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["bold.npy", "fc.npy", "record.json"]
    assert json.loads((out / "record.json").read_text())["loss"] == rec["loss"]
    assert np.load(out / "bold.npy", allow_pickle=False).shape == (20, N)


def test_loss_worst_below_a_valid_cost_is_refused():
    from raybrain.losses import get_loss

    with pytest.raises(ValueError, match=r"worst must be >= 5"):
        get_loss("pfic", worst=1.0)
    assert get_loss("pfic", worst=5.0).worst == 5.0


# -- safe defaults (issue 5, item 5) -------------------------------------------------------------
def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield owner, name, node


def test_the_data_package_never_unpickles_user_files():
    files = sorted((PACKAGE / "data").glob("*.py"))
    assert files
    loads = 0
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib") for n in names), f
        for owner, name, node in _calls(tree):
            assert not (owner in ("pickle", "joblib", "dill") and name in ("load", "loads")), f"{f}: {owner}.{name}"
            if owner in ("np", "numpy") and name == "load":
                loads += 1
                kw = {k.arg: k.value for k in node.keywords}
                assert "allow_pickle" in kw and isinstance(kw["allow_pickle"], ast.Constant) \
                    and kw["allow_pickle"].value is False, f"{f}:{node.lineno}: np.load without allow_pickle=False"
    assert loads >= 3  # .npy, .npz and the bundled data


def _safe_loader(node, tree, text) -> bool:
    """``Loader=`` of a ``yaml.load*`` call is a SafeLoader (directly, or a module-level name bound
    to an expression that names only SafeLoader variants)."""
    kw = {k.arg: k.value for k in node.keywords}
    if "Loader" not in kw:
        return False
    seg = ast.get_source_segment(text, kw["Loader"]) or ""
    if isinstance(kw["Loader"], ast.Name):
        for st in tree.body:
            if isinstance(st, ast.Assign) and any(getattr(t, "id", None) == seg for t in st.targets):
                seg = ast.get_source_segment(text, st.value) or ""
    loaders = re.findall(r"\w*Loader\b", seg)
    return bool(loaders) and all(n in ("SafeLoader", "CSafeLoader") for n in loaders)


def test_configs_are_read_with_yaml_safe_load():
    safe = 0
    for f in sorted(PACKAGE.rglob("*.py")):
        text = f.read_text()
        tree = ast.parse(text, str(f))
        for owner, name, node in _calls(tree):
            if owner == "yaml":
                assert name not in ("unsafe_load", "full_load", "unsafe_load_all", "full_load_all"), \
                    f"{f}:{node.lineno}: yaml.{name}"
                if name in ("load", "load_all"):
                    assert _safe_loader(node, tree, text), f"{f}:{node.lineno}: yaml.{name} without a SafeLoader"
                safe += name == "safe_load"
    assert safe >= 1
    from raybrain.experiment import load_config

    import inspect

    assert "yaml.safe_load(" in inspect.getsource(load_config)
