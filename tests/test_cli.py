"""The command line: listings, a short simulation, and one-line errors with exit code 2."""
import json

import numpy as np
import pytest

from raybrain.cli import main
from raybrain.data import describe


def test_datasets_lists_every_bundled_subject(capsys):
    assert main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [r["name"] for r in describe()]
    assert sum(r["name"].startswith("hcp/") for r in rows) == 7 and sum(r["name"].startswith("gw/") for r in rows) == 5


def test_models_lists_parameters_with_units(capsys):
    assert main(["models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    g = {p["name"]: p for p in out["rww"]}["G"]
    assert g["unit"] and g["bounds"] == [0.0, 3.0]
    assert {"a", "omega"} <= {p["name"] for p in out["hopf"]}


def test_simulate_json_and_out(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["simulate", "--subject", "hcp/101309", "--param", "G=2.0", "--duration", "72", "--burn-in", "0",
                 "--dt", "1e-3", "--window", "20", "--json", "--out", str(out)])
    assert code == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["subject"] == "hcp/101309" and rec["G"] == 2.0
    assert rec["loss"] == pytest.approx(rec["fc_corr_cost"] + rec["fc_mean_diff"] + rec["fcd_ks"], abs=1e-9)
    bold = np.load(out / "bold.npy")
    assert bold.shape == (100, 80)
    fc = np.load(out / "fc.npy")
    np.testing.assert_allclose(fc, np.corrcoef(bold.T.astype(np.float64)), atol=1e-6)
    assert json.loads((out / "record.json").read_text())["loss"] == rec["loss"]


@pytest.mark.parametrize("argv, needle", [
    (["simulate", "--subject", "hcp/nope"], "hcp/nope"),
    (["simulate", "--param", "Gx=1"], "did you mean 'G'"),
    (["simulate", "--param", "w_IE=1"], "FIC"),
    (["simulate", "--dt", "-1"], "'dt'"),
    (["simulate", "--sc", "/no/such/sc.csv", "--bold", "/no/such/b.npy", "--tr", "2"], "/no/such/sc.csv"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("raybrain: error:") and needle in err and "Traceback" not in err
    assert err.count("\n") == 1
