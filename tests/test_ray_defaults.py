"""Safe defaults of the local Ray instance raybrain starts (issue 5): the node is advertised on the
loopback address only and token authentication is on."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CODE = """
import json, os, shutil, subprocess
os.environ.pop("RAY_ADDRESS", None)
from raybrain.tuning.driver import _init_ray
_init_ray(1)
import ray
from ray._private.authentication.authentication_utils import is_token_auth_enabled
@ray.remote
def where():
    return ray.util.get_node_ip_address()
assert ray.get(where.remote()) == "127.0.0.1"
node = ray._private.worker._global_node  # this session's own processes (not another Ray's)
pids = [str(p.process.pid) for procs in node.all_processes.values() for p in procs]
ss = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
bound = [l.split()[3] for l in ss.splitlines() if any(f"pid={p}," in l for p in pids)]
ctx = ray.get_runtime_context()
print(json.dumps({"gcs": ctx.gcs_address, "node_ip": ray.util.get_node_ip_address(),
                  "token": is_token_auth_enabled(),
                  "bound": bound, "dashboard": bool(ray.get_runtime_context().get_node_id() and
                                                   ray._private.worker.global_worker.node.address_info.get("webui_url"))}))
ray.shutdown()
"""


@pytest.mark.slow
def test_local_ray_is_loopback_only_with_token_auth():
    import json
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    r = subprocess.run([sys.executable, "-c", CODE], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["gcs"].startswith("127.0.0.1:") and out["node_ip"] == "127.0.0.1"
    assert out["token"] is True
    assert out["dashboard"] is False
    # every listening socket of this Ray's processes is on the loopback address (where ss is present)
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]") for a in out["bound"]), out
