"""The progress line: counts and best loss read back from records written by ResultsWriter."""
from pathlib import Path

from raybrain.experiment import load_config
from raybrain.progress import Progress
from raybrain.results import ResultsWriter

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def meta(spec, fidelity, phase="train"):
    return {"mode": spec.mode, "phase": phase, "subject": spec.subject, "optimizer": spec.optimizer.key,
            "seed": spec.seed, "fidelity": fidelity, "duration": 1.0, "dt": 0.001}


def test_progress_line_counts_evaluations_runs_and_the_best_loss(tmp_path):
    cfg = load_config(QUICKSTART)
    runs = {s.optimizer.key: s for s in cfg.runs() if s.subject == "hcp/102311"}
    w = ResultsWriter(tmp_path, cfg.name)
    pop, trial = runs["cmaes"], runs["tpe-asha"]
    for g in range(2):  # two generations of 16 at the top fidelity (index 1)
        w.write_generation(pop.run_id, g, [{"G": 1.0, "loss": 2.0 - g - 0.01 * i} for i in range(16)], meta(pop, 1))
    for t in range(5):  # five trials at rung 0, two of them continued to rung 1
        w.write_generation(trial.run_id, t, [{"G": 1.0, "loss": 0.5}], meta(trial, 0))
    for t in range(2):
        w.write_generation(trial.run_id, t, [{"G": 1.0, "loss": 0.9}], meta(trial, 1))
    w.write_run_summary(pop.run_id, {"best_loss": 0.85})
    w.write_generation(pop.run_id, 0, [{"G": 1.0, "loss": 0.1}], meta(pop, -1, "validation"))
    p = Progress(tmp_path, cfg)
    line = p.line()
    assert len(line) <= 79
    n = len(cfg.runs()) * cfg.budget.evaluations
    assert f"evals {32 + 5}/{n}" in line
    assert f"runs 1/{len(cfg.runs())}" in line and f"holdout 1/{len(cfg.runs())}" in line
    # the best top-fidelity training loss (validation rows and lower rungs do not count)
    assert "best 0.85 hcp/102311 cmaes" in line
    assert p.line().split("]", 1)[1] == line.split("]", 1)[1]  # files read once, same answer
