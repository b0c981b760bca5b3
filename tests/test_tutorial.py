"""The cohort tutorial (docs/cohort.md) runs as written: every ``python`` block, in order, in one
namespace, in a fresh folder, through Ray (the session's instance)."""
import os
import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "cohort.md"


def blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_tutorial_has_its_steps():
    code = blocks(DOC.read_text())
    assert len(code) >= 6
    joined = "\n".join(code)
    for needle in ("make_cohort", "load_connectome", "stable_g_range", "load_config", '"run"', "associate"):
        assert needle in joined, needle


def test_the_cohort_tutorial_runs_from_files_to_group_effects(tmp_path, ray_local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", ray_local)
    ns: dict = {}
    for i, code in enumerate(blocks(DOC.read_text())):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), ns)  # noqa: S102 - our own docs
    table, effects, truth = ns["table"], ns["effects"], ns["truth"]
    # every subject was fitted, its covariates joined from participants.tsv (not from the truth)
    assert sorted(table["subject"]) == sorted(truth["participant_id"])
    merged = table.merge(truth, left_on="subject", right_on="participant_id", suffixes=("", "_true"))
    np.testing.assert_array_equal(merged["age"], merged["age_true"])
    # the fits lie in the auto range, below the lowest stable edge of the cohort's connectomes
    lo, hi = ns["res"].bounds["G"]
    assert lo == 0.0 and 2.0 < hi < 3.0 and table["G"].between(lo, hi).all()
    # the association is the OLS slope of the fitted G on age, with its interval around it
    row = effects.iloc[0]
    slope = np.polyfit(table["age"].astype(float), table["G"].astype(float), 1)[0]
    assert row["slope"] == pytest.approx(slope, rel=1e-9)
    assert row["ci_low"] < row["slope"] < row["ci_high"] and 0 < row["p_perm"] <= 1
    assert os.path.getsize("G-vs-age.png") > 0
