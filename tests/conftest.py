"""Shared fixtures. ``ray_local`` is the one Ray instance of the test session (tests/test_tune.py)."""
import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance with 2 CPUs (the CI machine's size), started once per session and shut
    down at the end; yields its GCS address so subprocesses (the CLI) can join it through
    ``RAY_ADDRESS`` instead of starting their own (~5 s each). Not autouse: only tests that ask for
    it pay for Ray."""
    ray = pytest.importorskip("ray")
    saved = dict(os.environ)
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # as raybrain.tuning.driver._init_ray: no Tune tables
    os.environ["RAY_DEDUP_LOGS"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)
