"""CuPy backend on a GPU: the array path, and the fused CUDA kernel generated for each model, against
the NumPy array path on the same noise.

Runs only where CuPy and a CUDA device are available (the device machine; ``benchmarks/gpu_check.sh``);
skipped elsewhere. The CUDA kernels' code is tested without a GPU through their host harness
(``tests/test_cuda_kernel.py``).
"""
import numpy as np
import pytest

cp = pytest.importorskip("cupy", reason="CuPy not installed: the CUDA path is tested on a GPU machine "
                         "(pip install 'raybrain[gpu]')")
try:
    _ = cp.cuda.runtime.getDeviceCount()
except Exception as e:  # pragma: no cover - depends on the machine
    pytest.skip(f"no CUDA device: {e}", allow_module_level=True)

from raybrain import features as F
from raybrain.data import list_subjects, load_subject
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.models import LaNMM, get_model
from raybrain.objective import scale_sc

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def sc():
    return scale_sc(load_subject(list_subjects("hcp")[0]).sc, 0.2)


def _max_rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def test_cupy_array_path_matches_numpy(sc):
    st = SimulationSettings(duration=14.4, dt=1e-3, dtype="float64", fused="never", seed=2)
    params = {"G": np.array([0.5, 1.5, 2.0])}
    host = Simulation("rww", sc, params, st).run()
    dev = Simulation("rww", sc, params, st.replace(backend="cupy")).run()
    np.testing.assert_allclose(cp.asnumpy(dev.bold), host.bold, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(F.fc(dev.bold)), F.fc(host.bold), atol=1e-9)


FUSED_CASES = {
    "rww": (lambda: get_model("rww"), {"G": np.array([0.5, 1.5, 2.0])},
            SimulationSettings(duration=7.2, burn_in=1.0, dt=1e-3, seed=2)),
    "hopf": (lambda: get_model("hopf"), {"G": np.array([0.2, 0.6, 1.0]), "a": np.array([-0.05, -0.01, 0.02])},
             SimulationSettings(duration=10.0, burn_in=0.5, dt=1e-2, bold_dt=2e-2, tr=0.1, seed=2)),
    "lanmm": (lambda: LaNMM(), {"G": np.array([2.0, 6.0, 10.0])},
              SimulationSettings(duration=0.2, burn_in=0.05, dt=1e-4, bold_dt=1e-3, tr=4e-3, seed=2)),
    "lanmm-balloon": (lambda: LaNMM(output="rate"), {"G": np.array([2.0, 6.0, 10.0])},
                      SimulationSettings(duration=0.72, burn_in=0.05, dt=1e-4, bold_dt=1e-3, tr=0.036, seed=2)),
}


@pytest.mark.parametrize("case", sorted(FUSED_CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_cuda_matches_numpy_array_path(sc, case, dtype):
    """Simulation on CuPy with the fused kernel generated from the model's declaration (prepared,
    then run in two chunks) against the NumPy array path: samples and running means; float64 to
    1e-9 (device FMAs and libdevice), float32 to 1e-3."""
    make, params, st = FUSED_CASES[case]
    st = st.replace(dtype=dtype)
    host = Simulation(make(), sc, params, st.replace(fused="never")).run()
    sim = Simulation(make(), sc, params, st.replace(backend="cupy", fused="always"))
    assert sim.use_fused
    sim.prepare()
    first = sim.run(st.duration / 2)
    second = sim.run(st.duration / 2)
    bold = np.concatenate([cp.asnumpy(first.bold), cp.asnumpy(second.bold)], axis=1)
    assert bold.shape == host.bold.shape and np.all(np.isfinite(bold))
    tol = 1e-9 if dtype == "float64" else 1e-3
    assert _max_rel(bold, host.bold) < tol
    for k, v in second.means.items():
        assert _max_rel(cp.asnumpy(v), host.means[k]) < tol, k
