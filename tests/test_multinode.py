"""A worker node killed mid-experiment loses nothing (issue 5).

A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head with no CPUs
for trials, and worker nodes of 1 CPU each) runs one experiment in both search modes. A worker
node is killed (no graceful shutdown) while population runs are training, and a replacement node
joins; later the node running trial-mode trials is killed too. Tune retries the lost trials from
their checkpoints on the surviving nodes. The experiment must complete without failed trials,
every evaluation recorded before a kill must be in the final results with the same values, and no
evaluation may be recorded twice.

The cluster runs in a subprocess (its own Ray, apart from the session's ``ray_local``).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raybrain import results as R

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BUDGET, POP, TRIALS = 40, 4, 10

JOB = r'''
import json, os, sys, threading, time
from pathlib import Path
os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
os.environ.pop("RAY_ADDRESS", None)
import ray
from ray.cluster_utils import Cluster
from raybrain import results as R
from raybrain.experiment import ExperimentConfig
from raybrain.tuning import run_experiment

cfg = ExperimentConfig.model_validate(json.loads(sys.argv[1]))
out = Path(sys.argv[2])
root = Path(cfg.storage).resolve() / cfg.name
node = dict(num_cpus=1, object_store_memory=80 * 2**20)
cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, object_store_memory=80 * 2**20,
                                                             include_dashboard=False))
workers = [cluster.add_node(**node), cluster.add_node(**node)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
done = {}
thread = threading.Thread(target=lambda: done.update(result=run_experiment(cfg)))
thread.start()

def files(pattern):
    return len(list(root.glob(f"evaluations/{pattern}/gen-*.parquet")))

def wait(pred, what, timeout=240):
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout or not thread.is_alive():
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.02)

def busy_nodes():  # worker nodes whose CPU is taken (by a trial)
    from ray._private.state import available_resources_per_node
    return {n for n, r in available_resources_per_node().items() if r.get("CPU", 0) < 1}

kills = []
# 1) population mode: kill a worker once several generations are recorded, and add a fresh node
wait(lambda: files("*__cmaes__*") + files("*__random__*") >= 6, "population generations")
R.load(root).evaluations.to_parquet(out / "before1.parquet")
victim = workers[1]
cluster.remove_node(victim, allow_graceful=False)
kills.append(("population", victim.node_id))
workers.append(cluster.add_node(**node))
# 2) trial mode: kill the node of a running trial once some trials are recorded
wait(lambda: files("*__t-cmaes__*") >= 3, "trial-mode trials")
R.load(root).evaluations.to_parquet(out / "before2.parquet")
busy = busy_nodes()
victim = next((w for w in workers[::-1] if w.node_id in busy and w is not workers[1]), workers[-1])
cluster.remove_node(victim, allow_graceful=False)
kills.append(("trial", victim.node_id))
thread.join(timeout=600)
root_, errors = done["result"]
failures = {str(f.relative_to(root)): f.read_text()[-1500:] for f in root.glob("tune/**/error.txt")}
json.dump({"errors": errors, "kills": kills, "failures": failures}, open(out / "report.json", "w"))
ray.shutdown()
cluster.shutdown()
'''


def experiment(storage):
    from raybrain.experiment import ExperimentConfig

    d = {"name": "nodes", "storage": str(storage), "subjects": {"ids": ["hcp/101309"]}, "model": {"name": "hopf"},
         "parametrisation": {"kind": "global", "names": ["G", "sigma"],
                             "bounds": {"G": [0.1, 1.0], "sigma": [0.01, 0.1]}},
         "loss": "fc_corr",
         "simulation": {"fused": "never",  # the run layer under test: no kernel to compile
                        "fidelities": [{"duration": 21.6, "dt": 0.02}, {"duration": 43.2, "dt": 0.02}],
                        "burn_in": 0.0, "noise": "independent"},
         "optimizers": [{"name": "cmaes", "population": POP}, {"name": "random", "population": POP},
                        {"name": "cmaes", "label": "t-cmaes", "mode": "trial", "population": 2}],
         "budget": {"evaluations": BUDGET}, "seeds": [1, 2], "validation": {"top": 2}}
    cfg = ExperimentConfig.model_validate(d)
    return cfg


KEY = ["run_id", "phase", "generation", "fidelity", "G", "sigma"]


def test_killed_worker_nodes_lose_no_evaluation(tmp_path):
    cfg = experiment(tmp_path / "results")
    r = subprocess.run([sys.executable, "-c", JOB, cfg.model_dump_json(), str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=900, env={**__import__("os").environ,
                                                                        "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    report = json.loads((tmp_path / "report.json").read_text())
    assert [k for k, _ in report["kills"]] == ["population", "trial"]
    assert report["errors"] == 0, report["failures"]  # every trial lost with a node was retried and finished
    after = R.load(tmp_path / "results" / "nodes").evaluations
    train = after[after["phase"] == "train"]
    # complete: every run has its budget (population: candidates; trial mode: trials at rung 0)
    for spec in cfg.runs():
        rows = train[train["run_id"] == spec.run_id]
        first = rows[rows["fidelity"] == (0 if spec.mode == "trial" else 1)]
        assert len(first) == BUDGET, (spec.run_id, len(first))
    # none twice
    held = after[after["phase"] != "train"]
    assert not held.duplicated(["run_id", "phase", "generation", "source_eval", "profile_param", "profile_step"]).any()
    assert not train.duplicated(["run_id", "generation", "fidelity", "G", "sigma"]).any()
    # nothing recorded before a kill was lost or changed
    for name in ("before1", "before2"):
        before = pd.read_parquet(tmp_path / f"{name}.parquet")
        before = before[before["phase"] == "train"]
        assert len(before) > 0
        merged = before[KEY + ["loss"]].merge(after[KEY + ["loss"]], on=KEY, how="left", suffixes=("", "_after"))
        assert merged["loss_after"].notna().all(), f"{name}: evaluations lost"
        np.testing.assert_array_equal(merged["loss"], merged["loss_after"])
    # the held-out stage ran for every run after the kills
    assert set(after.loc[after["phase"] == "validation", "run_id"]) == {s.run_id for s in cfg.runs()}
