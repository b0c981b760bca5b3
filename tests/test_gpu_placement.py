"""The GPU evaluator can never deadlock (issue 11, item 6).

Before: on ``cluster/aws.yaml`` the CPU head (no CuPy) decided "no evaluator" and gave each trial
0.25 GPU, while trials on a GPU worker (with CuPy) decided "evaluator" and asked for an evaluator
actor holding a whole GPU on a node whose GPU the trials held: it never started. Now the driver
decides once from the cluster's resources (:func:`raybrain.evaluator.plan`), stamps the decision
into the config every trial receives, gives trials no GPU while the evaluator is on and starts the
evaluators, one per GPU and pinned to its node, before any trial.

* the plan over the shipped recipes' node resources (aws, gcp, both KubeRay manifests, slurm):
  every evaluator fits its node, trials hold no GPU while it is on, also before an autoscaler has
  started any GPU worker;
* the decision does not depend on what the driver (or a worker) can import;
* a fake multi-node cluster (``ray.cluster_utils.Cluster``: a head with ``num_cpus=0`` as in
  ``aws.yaml``, two worker nodes with 2 CPUs and ``num_gpus=1`` each) runs a config shaped like
  ``compare-optimizers.yaml`` (``backend: auto``, ``resources: {cpu: 1, gpu: 0.25}``, evaluator
  ``auto``) on a tiny Hopf problem. The worker nodes can import a stand-in ``cupy`` that reports one
  CUDA device and the driver cannot, as on aws: before the fix the workers chose the evaluator the
  driver had not reserved, and the run hung. ``RAYBRAIN_GPU_BACKEND=numpy`` at the driver makes the
  GPU plan simulate with NumPy (the NumPy evaluator stands in for CuPy). The run must finish within
  a deadline, with records identical to an evaluator-off run, the evaluators holding the two GPUs
  and serving every simulation of the population and held-out stages; without the stand-in the
  plan says CuPy and the run fails at once, naming the node, instead of hanging.

The cluster runs in a subprocess (its own Ray, apart from the session's ``ray_local``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raybrain import evaluator as E
from raybrain.experiment import ConfigError, ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
SUBJECT = "hcp/101309"
BUDGET, POP, TOP = 8, 4, 2
DEADLINE_S = 120  # one run_experiment on the fake cluster; a deadlock fails the test here


# ----------------------------------------------------------------------- the shipped recipes
def _launcher(name):
    """(head resources, [(worker resources, max workers)]) of a cluster-launcher config."""
    doc = yaml.safe_load((CLUSTER / name).read_text())
    types = doc["available_node_types"]
    head = doc.get("head_node_type", "head")
    workers = [(t["resources"], int(t.get("max_workers", doc.get("max_workers", 1))))
               for k, t in types.items() if k != head]
    return types[head]["resources"], workers


def _k8s_node(group):
    """Ray resources of a KubeRay head or worker group: rayStartParams, else the container limits."""
    params = group.get("rayStartParams") or {}
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    cpu = params.get("num-cpus", limits.get("cpu", 0))
    gpu = params.get("num-gpus", limits.get("nvidia.com/gpu", 0))
    return {"CPU": float(cpu), "GPU": float(gpu)}


def _kuberay(name):
    doc = yaml.safe_load((CLUSTER / name).read_text())
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    return (_k8s_node(spec["headGroupSpec"]),
            [(_k8s_node(g), int(g.get("maxReplicas", 1))) for g in spec["workerGroupSpecs"]])


def _slurm(name):
    """Every node alike, the head too: --cpus-per-task CPUs (ray --num-cpus), the GPUs of
    --gpus-per-node, --gpus-per-task (one task per node) or --gres=gpu:N."""
    text = (CLUSTER / name).read_text()

    def sbatch(pattern):
        m = re.search(rf"^#SBATCH --{pattern}", text, re.M)
        return int(m.group(1)) if m else None

    gpus = sbatch(r"gpus-per-node=(\d+)") or sbatch(r"gpus-per-task=(\d+)") or sbatch(r"gres=gpu:(?:\w+:)?(\d+)")
    node = {"CPU": float(sbatch(r"cpus-per-task=(\d+)")), "GPU": float(gpus)}
    return node, [(node, (sbatch(r"nodes=(\d+)") or 1) - 1)]


RECIPES = {"aws.yaml": _launcher, "gcp.yaml": _launcher, "kuberay-raycluster.yaml": _kuberay,
           "kuberay-rayjob.yaml": _kuberay, "slurm.sh": _slurm}
RECIPES.update({p.name: _slurm for p in CLUSTER.glob("slurm*.sh") if p.name not in RECIPES})


def _total(nodes):
    out: dict = {}
    for n in nodes:
        for k, v in n.items():
            out[k] = out.get(k, 0.0) + float(v)
    return out


@pytest.fixture(scope="module")
def compare():
    return load_config(REPO / "experiments" / "compare-optimizers.yaml")


def test_recipes_are_parsed_as_shipped():
    head, workers = _launcher("aws.yaml")
    assert head == {"CPU": 0} and workers == [({"CPU": 4, "GPU": 1}, 8)]
    head, workers = _kuberay("kuberay-rayjob.yaml")
    assert head["CPU"] == 0 and [w for w, _ in workers] == [{"CPU": 4.0, "GPU": 1.0}]
    head, workers = _slurm("slurm.sh")
    assert head == {"CPU": 32.0, "GPU": 4.0} and workers == [(head, 1)]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_evaluator_of_the_shipped_recipes_can_be_placed(recipe, compare, monkeypatch):
    """compare-optimizers.yaml ({cpu: 1, gpu: 0.25}, backend auto, evaluator auto) on each recipe,
    as the driver sees the cluster when it starts (an autoscaler may not have started any worker
    yet), with one worker, and at full size: the evaluator is on, with CuPy; trials hold no GPU; on
    every node the evaluators reserve exactly its GPUs (one each), so each can be placed next to
    the node's trials; a head without CPUs hosts none."""
    monkeypatch.delenv(E.GPU_BACKEND_ENV, raising=False)
    head, workers = RECIPES[recipe](recipe)
    assert compare.resources.gpu == 0.25 and compare.resources.cpu == 1
    scales = {"head only": [head], "one worker": [head] + [w for w, k in workers[:1] if k],
              "full": [head] + [w for w, k in workers for _ in range(k)]}
    for scale, nodes in scales.items():
        p = E.plan(compare, _total(nodes))
        assert (p.backend, p.evaluator, p.gpus) == ("cupy", True, True), (scale, p)
        assert p.trial == {"cpu": 1.0, "gpu": 0.0}, (scale, p)
        for node in nodes:
            gpus, cpus = int(node.get("GPU", 0)), float(node.get("CPU", 0))
            count, each = p.evaluators(node)
            assert count * each == gpus, (scale, node)  # one evaluator per GPU, holding it
            assert count * each + p.trial["gpu"] * int(cpus // p.trial["cpu"]) <= gpus  # room for all
            if gpus:
                assert cpus // p.trial["cpu"] >= 1, (scale, node)  # trials run next to their evaluator
            else:
                assert count == 0, (scale, node)  # a CPU head (CPU 0) hosts none
    # what went wrong before: trials holding 0.25 GPU each fill a node's GPU, leaving none for an
    # evaluator of one whole GPU; with the evaluator off (explicitly) the trials keep their share
    off = E.plan(compare.model_copy(update={"resources": compare.resources.model_copy(
        update={"evaluator": "off"})}), _total(scales["full"]))
    assert not off.evaluator and off.trial == {"cpu": 1.0, "gpu": 0.25}
    assert all(off.evaluators(n) == (0, 0) for n in scales["full"])


class _FakeCupy:
    """What a driver or worker with CuPy and a GPU would find."""

    class cuda:
        class runtime:
            @staticmethod
            def getDeviceCount():
                return 1


def _tiny(**over):
    d = {"name": "gpu-placement", "storage": "results", "subjects": {"ids": [SUBJECT]}, "model": {"name": "hopf"},
         "parametrisation": {"kind": "global", "names": ["G", "sigma"],
                             "bounds": {"G": [0.1, 1.0], "sigma": [0.01, 0.1]}},
         "loss": "fc_corr",
         "simulation": {"fused": "never",  # placement under test: no kernel to compile
                        "fidelities": [{"duration": 21.6, "dt": 0.08}, {"duration": 43.2, "dt": 0.08}],
                        "burn_in": 0.0, "noise": "common", "backend": "auto"},
         "optimizers": [{"name": "cmaes", "population": POP}, {"name": "random", "population": POP}],
         "budget": {"evaluations": BUDGET}, "seeds": [1],
         "validation": {"top": TOP, "profile": {"points": 0}},  # no profile: the holdout is one request per run
         "resources": {"cpu": 1, "gpu": 0.25}}
    d.update(over)
    return ExperimentConfig.model_validate(d)


@pytest.mark.parametrize("driver_has_cupy", [False, True])
def test_the_decision_is_the_drivers_and_ignores_imports(driver_has_cupy, monkeypatch):
    """The plan depends on the cluster's resources and the config only; the stamped config gives
    every process the same answer whatever it imports; an unplanned ``auto`` is never re-decided."""
    from raybrain import _backend
    from raybrain.experiment import config_from_json as _config

    monkeypatch.delenv(E.GPU_BACKEND_ENV, raising=False)
    monkeypatch.setattr(_backend, "_cupy", lambda: _FakeCupy if driver_has_cupy else None)
    cfg = _tiny()
    gpu = E.plan(cfg, {"CPU": 0.0, "GPU": 2.0})
    assert (gpu.backend, gpu.evaluator, gpu.trial) == ("cupy", True, {"cpu": 1.0, "gpu": 0.0})
    cpu_cfg = _tiny(resources={"cpu": 1, "gpu": 0})
    cpu = E.plan(cpu_cfg, {"CPU": 4.0})
    assert (cpu.backend, cpu.evaluator, cpu.trial) == ("numpy", False, {"cpu": 1.0, "gpu": 0.0})
    for p, c in ((gpu, cfg), (cpu, cpu_cfg)):
        for worker_has_cupy in (False, True):  # what a worker decides from the stamped config
            monkeypatch.setattr(_backend, "_cupy", lambda: _FakeCupy if worker_has_cupy else None)
            got = _config(p.stamp(c))
            assert (got.use_evaluator, got.simulation.resolved_backend()) == (p.evaluator, p.backend)
    with pytest.raises(ValueError, match="resolved by the driver"):
        cfg.use_evaluator  # noqa: B018 - an unplanned auto: never decided from this process's imports
    # the stand-in for tests on fake GPUs: NumPy where the plan would use CuPy, the rest the same
    monkeypatch.setenv(E.GPU_BACKEND_ENV, "numpy")
    fake = E.plan(cfg, {"CPU": 4.0, "GPU": 2.0})
    assert (fake.backend, fake.evaluator, fake.gpus, fake.trial) == ("numpy", True, True, gpu.trial)
    assert fake.evaluators({"CPU": 2, "GPU": 1}) == (1, 1) and fake.evaluators({"CPU": 0}) == (0, 0)


def test_plan_rules():
    cfg = _tiny()
    on = {"CPU": 8.0, "GPU": 2.0}
    assert not E.plan(_tiny(simulation=dict(cfg.simulation.model_dump(), backend="numpy")), on).evaluator
    assert E.plan(_tiny(resources={"cpu": 1, "gpu": 0, "evaluator": "on"}), {"CPU": 2.0}).evaluator
    forced = E.plan(_tiny(resources={"cpu": 2, "gpu": 0.5, "evaluator": "on"}), on)
    assert forced.trial == {"cpu": 2.0, "gpu": 0.0}
    # nodes without GPUs: none in a CuPy plan (their trials use a GPU node's), one per node otherwise
    assert E.slots({"CPU": 4}, "cupy") == (0, 0) and E.slots({"CPU": 4}, "numpy") == (1, 0)
    assert E.slots({"CPU": 4, "GPU": 4}, "cupy") == (4, 1)
    with pytest.raises(ValueError, match=E.GPU_BACKEND_ENV):
        E.plan(cfg, on, gpu_backend="jax")
    # a composite spectral + FC loss, which the evaluator does not run: auto is off, on an error
    composite = {
        "name": "composite", "subjects": {"synthetic": [{"name": "healthy", "from_subject": SUBJECT,
                                                         "params": {"G": 10.0, "C_P2_PV": 200.0}, "seed": 5}]},
        "model": {"name": "lanmm", "options": {"output": "eeg"}},
        "parametrisation": {"kind": "global", "names": ["G", "C_P2_PV"],
                            "bounds": {"G": [0.0, 20.0], "C_P2_PV": [100.0, 300.0]}},
        "loss": {"spectral": 1.0, "fc_corr": 0.5},
        "simulation": {"fidelities": [{"duration": 7.2, "dt": 0.0005}], "burn_in": 0.5, "backend": "auto",
                       "sc_max": 1.0, "meeg": {"fs": 250, "segment": 0.5, "duration": 1.0}},
        "optimizers": [{"name": "random", "population": 4}], "budget": {"evaluations": 8},
        "validation": {"top": 0}, "resources": {"cpu": 1, "gpu": 0.25}}
    p = E.plan(ExperimentConfig.model_validate(composite), on)
    assert (p.backend, p.evaluator, p.trial) == ("cupy", False, {"cpu": 1.0, "gpu": 0.25})
    with pytest.raises(ConfigError, match="resources.evaluator"):
        ExperimentConfig.model_validate(dict(composite, resources={"cpu": 1, "gpu": 0.25, "evaluator": "on"}))


def test_an_evaluator_that_cannot_use_cupy_says_so_at_once(monkeypatch):
    from raybrain import _backend

    monkeypatch.setattr(_backend, "_cupy", lambda: None)
    with pytest.raises(RuntimeError, match=r"CuPy cannot be imported.*raybrain\[gpu\]"):
        E.Evaluator(backend="cupy")
    monkeypatch.setattr(_backend, "_cupy", lambda: _FakeCupy)  # imports, sees a device, runs nothing
    with pytest.raises(RuntimeError, match="CuPy is not usable"):
        E.Evaluator(backend="cupy")
    E.Evaluator(backend="numpy")


# ----------------------------------------------------------------------- the fake cluster
FAKE_CUPY = '''"""Stand-in for CuPy on the fake GPU nodes: it imports and reports one CUDA device."""


class cuda:
    class runtime:
        @staticmethod
        def getDeviceCount():
            return 1
'''

JOB = r'''
import json, os, sys, threading, time
from pathlib import Path
os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("RAYBRAIN_GPU_BACKEND", None)
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
import raybrain.evaluator as E
from raybrain.experiment import ExperimentConfig
from raybrain.tuning import run_experiment

cfg = ExperimentConfig.model_validate(json.loads(sys.argv[1]))
out, fake, deadline = Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
mb = 80 * 2**20
cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, num_gpus=0, object_store_memory=mb,
                                                             include_dashboard=False))
# the GPU workers can import "cupy" (the stand-in), the driver on the head cannot: as on aws.yaml
env = {"PYTHONPATH": os.pathsep.join([fake, os.environ.get("PYTHONPATH", "")])}
workers = [cluster.add_node(num_cpus=2, num_gpus=1, object_store_memory=mb, env_vars=env) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
report = {"workers": [w.node_id for w in workers], "head": cluster.head_node.node_id, "runs": {}}
seen = {"plans": [], "texts": [], "evaluators": []}
if hasattr(E, "plan"):  # watch the driver's decision and the evaluators (absent before the fix)
    _plan, _stamp, _shutdown = E.plan, E.Plan.stamp, E.shutdown_evaluators

    def plan(*a, **k):
        p = _plan(*a, **k)
        seen["plans"].append({"backend": p.backend, "evaluator": p.evaluator, "trial": p.trial})
        return p

    def stamp(self, c):
        seen["texts"].append(_stamp(self, c))
        return seen["texts"][-1]

    def shutdown(namespace=E.NAMESPACE):  # what each evaluator did, before they go
        for name in E._evaluator_names(namespace):
            h = ray.get_actor(name, namespace=namespace)
            info = ray.get(h.ready.remote(), timeout=60)
            info.update(name=name, requests=ray.get(h.stats.remote(), timeout=60)["requests"])
            seen["evaluators"].append(info)
        return _shutdown(namespace)

    E.plan, E.Plan.stamp, E.shutdown_evaluators = plan, stamp, shutdown


def run(label, c):
    done = {}

    def target():
        t0 = time.time()
        try:
            root, errors = run_experiment(c)
            done.update(root=str(root), errors=errors)
        except Exception as e:
            done.update(error=f"{type(e).__name__}: {e}")
        done["wall_s"] = time.time() - t0

    for k in seen:
        seen[k] = []
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(deadline)
    report["runs"][label] = dict(done, deadlock=t.is_alive(), **{k: list(v) for k, v in seen.items()})
    json.dump(report, open(out / "report.json", "w"))
    if t.is_alive():
        ray.shutdown()
        cluster.shutdown()
        sys.exit(0)


def configure(name, evaluator):
    res = cfg.resources.model_copy(update={"evaluator": evaluator})
    return cfg.model_copy(update={"name": name, "resources": res})


os.environ["RAYBRAIN_GPU_BACKEND"] = "numpy"  # the driver's stand-in; the workers never read it
run("auto", configure("auto", "auto"))
run("off", configure("off", "off"))
# what every worker decides from the config its trials received, and what it would decide itself
@ray.remote(num_cpus=0)
def decide(stamped, unplanned):
    from raybrain.experiment import config_from_json as _config
    c, u = _config(stamped), ExperimentConfig.model_validate_json(unplanned)
    return {"evaluator": c.use_evaluator, "backend": c.simulation.resolved_backend(),
            "own_backend": u.simulation.resolved_backend()}

texts = report["runs"]["auto"]["texts"]
if texts:
    report["workers_decide"] = [ray.get(decide.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        w.node_id, soft=False)).remote(texts[0], cfg.model_dump_json()), timeout=60) for w in workers]
# without the stand-in the plan says CuPy, which the GPU nodes cannot use: a clear error, at once
os.environ.pop("RAYBRAIN_GPU_BACKEND")
run("cupy", configure("cupy", "auto"))

# get_evaluator from a worker: a node without one (as one an autoscaler adds) gets it, holding the
# node's GPU; one whose GPU something else holds fails within its timeout instead of waiting; a
# node without GPUs in a CuPy experiment uses another node's
ns = "raybrain-test-placement"


def on(node_id):
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


@ray.remote(num_cpus=0)
def find(backend, timeout_s):
    t0 = time.time()
    try:
        info = ray.get(E.get_evaluator(namespace=ns, backend=backend, timeout_s=timeout_s).ready.remote())
    except Exception as e:
        info = {"error": f"{type(e).__name__}: {e}"}
    info["wall_s"] = time.time() - t0
    return info


class Holder:
    def ping(self):
        return 1


if hasattr(E, "slots"):
    probes = report["probes"] = {}
    hold = ray.remote(num_cpus=0, num_gpus=1)(Holder).options(scheduling_strategy=on(workers[0].node_id)).remote()
    ray.get(hold.ping.remote(), timeout=60)
    probes["new_node"] = ray.get(find.options(scheduling_strategy=on(workers[1].node_id)).remote("numpy", 60))
    probes["gpu_taken"] = ray.get(find.options(scheduling_strategy=on(workers[0].node_id)).remote("numpy", 5))
    probes["cpu_node_cupy"] = ray.get(find.options(scheduling_strategy=on(report["head"])).remote("cupy", 60))
    probes["left"] = E._evaluator_names(ns)
    ray.kill(hold)
    E.shutdown_evaluators(ns)
json.dump(report, open(out / "report.json", "w"))
ray.shutdown()
cluster.shutdown()
'''


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    """Runs the job once: (report, results storage)."""
    tmp = tmp_path_factory.mktemp("gpu-placement")
    (tmp / "fake" / "cupy").mkdir(parents=True)
    (tmp / "fake" / "cupy" / "__init__.py").write_text(FAKE_CUPY)
    cfg = _tiny(storage=str(tmp / "results"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", E.GPU_BACKEND_ENV)}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-c", JOB, cfg.model_dump_json(), str(tmp), str(tmp / "fake"),
                        str(DEADLINE_S)], cwd=REPO, capture_output=True, text=True, timeout=3 * DEADLINE_S + 120,
                       env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return json.loads((tmp / "report.json").read_text()), tmp / "results"


@pytest.mark.slow
def test_fake_gpu_cluster_finishes_with_the_evaluator_and_the_same_records(fake_cluster):
    report, storage = fake_cluster
    auto, off = report["runs"]["auto"], report["runs"]["off"]
    assert not auto["deadlock"], f"run_experiment did not finish within {DEADLINE_S} s: the evaluator deadlock"
    assert auto.get("errors") == 0 and off.get("errors") == 0, (auto, off)
    # the driver's decision: evaluator on, NumPy standing in for CuPy, trials without GPU
    assert auto["plans"] == [{"backend": "numpy", "evaluator": True, "trial": {"cpu": 1.0, "gpu": 0.0}}]
    assert off["plans"] == [{"backend": "numpy", "evaluator": False, "trial": {"cpu": 1.0, "gpu": 0.25}}]
    # one evaluator per GPU, on the GPU workers only, each holding its GPU; they served every
    # simulation of the population runs (BUDGET / POP generations each) and of the held-out stage
    evs = auto["evaluators"]
    assert sorted(e["node"] for e in evs) == sorted(report["workers"])
    assert all(len(e["gpus"]) == 1 and e["backend"] == "numpy" for e in evs), evs
    assert sum(e["requests"] for e in evs) == 2 * (BUDGET // POP) + 2, evs
    assert off["evaluators"] == []
    # identical records
    from raybrain import results as R

    cols = ["run_id", "phase", "generation", "fidelity", "eval_index", "G", "sigma", "loss", "valid"]
    frames = [R.load(storage / name).evaluations.sort_values(["run_id", "phase", "eval_index"])
              .reset_index(drop=True)[cols] for name in ("auto", "off")]
    assert len(frames[0]) == 2 * (BUDGET + TOP)
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)


@pytest.mark.slow
def test_fake_gpu_cluster_workers_take_the_drivers_decision(fake_cluster):
    report, _ = fake_cluster
    assert not report["runs"]["auto"]["deadlock"]
    # each GPU worker, which can import the stand-in cupy, would decide CuPy by itself, but does
    # what the driver decided, from the config its trials received
    assert report["workers_decide"] == [{"evaluator": True, "backend": "numpy", "own_backend": "cupy"}] * 2


@pytest.mark.slow
def test_fake_gpu_cluster_without_usable_cupy_fails_at_once_naming_the_node(fake_cluster):
    report, _ = fake_cluster
    cupy = report["runs"]["cupy"]
    assert not cupy["deadlock"]
    assert cupy["plans"] == [{"backend": "cupy", "evaluator": True, "trial": {"cpu": 1.0, "gpu": 0.0}}]
    err = cupy.get("error", "")
    assert err.startswith("RuntimeError") and "evaluators did not start" in err, cupy
    assert "CuPy is not usable" in err and "raybrain[gpu]" in err
    assert all(w in err for w in report["workers"]), err  # names every GPU node
    assert cupy["wall_s"] < 60


@pytest.mark.slow
def test_fake_gpu_cluster_get_evaluator_never_waits_forever(fake_cluster):
    report, _ = fake_cluster
    w0, w1 = report["workers"]
    probes = report["probes"]
    # a node without a started evaluator (as one an autoscaler adds): its first caller starts it,
    # pinned there, holding the node's GPU (free: trials hold none while the evaluator is on)
    assert probes["new_node"]["node"] == w1 and len(probes["new_node"]["gpus"]) == 1, probes
    # something else holds the GPU: a clear error within the timeout, and no actor left pending
    taken = probes["gpu_taken"]
    assert taken.get("error", "").startswith("RuntimeError") and "did not start within 5 s" in taken["error"], taken
    assert taken["wall_s"] < 30
    assert probes["left"] == [E.evaluator_name(w1)]
    # a node without GPUs (the head) in a CuPy experiment: a GPU node's evaluator
    assert probes["cpu_node_cupy"]["node"] == w1, probes
