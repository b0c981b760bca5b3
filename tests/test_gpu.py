"""CuPy backend: the array path on the GPU against the NumPy array path on the same noise.

Runs only where CuPy and a CUDA device are available (the device machine); skipped elsewhere.
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
from raybrain.objective import scale_sc

pytestmark = pytest.mark.gpu


def test_cupy_array_path_matches_numpy():
    sc = scale_sc(load_subject(list_subjects("hcp")[0]).sc, 0.2)
    st = SimulationSettings(duration=14.4, dt=1e-3, dtype="float64", fused="never", seed=2)
    params = {"G": np.array([0.5, 1.5, 2.0])}
    host = Simulation("rww", sc, params, st).run()
    dev = Simulation("rww", sc, params, st.replace(backend="cupy")).run()
    np.testing.assert_allclose(cp.asnumpy(dev.bold), host.bold, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(F.fc(dev.bold)), F.fc(host.bold), atol=1e-9)
