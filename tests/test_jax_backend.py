"""JAX as one more array module: array_module recognises JAX arrays and tracers, the array path of
Simulation runs on JAX and equals NumPy, the JAX simulator's TR grid is Simulation's, and the
parameters that cannot be differentiated through the model's prepare() are found without naming
a model. Skipped without the optional ``jax`` extra."""
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="needs the optional 'jax' extra (pip install 'raybrain[jax]')")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

from raybrain._backend import array_module, get_xp  # noqa: E402
from raybrain.integrate import Simulation, SimulationSettings  # noqa: E402
from raybrain.integrate import sample_plan  # noqa: E402
from raybrain.jax_backend import JaxSimulator  # noqa: E402
from raybrain.models import get_model  # noqa: E402
from raybrain.models.rww import fic_w_IE  # noqa: E402


def _sc(n, seed=0):
    c = np.random.default_rng(seed).random((n, n)) * 0.04
    np.fill_diagonal(c, 0.0)
    return c


def test_array_module_recognises_jax_arrays_and_tracers():
    assert array_module(np.zeros(2)) is np and array_module(1.0) is np
    assert array_module(jnp.zeros(2)) is jnp and array_module(np.zeros(1), jnp.zeros(1)) is jnp
    seen = []
    jax.jit(lambda x: seen.append(array_module(x)) or x)(jnp.zeros(3))
    jax.grad(lambda x: seen.append(array_module(x)) or x)(1.0)
    assert seen == [jnp, jnp]
    assert get_xp("jax") is jnp
    # recognising arrays never imports JAX
    code = ("import sys, numpy as np; from raybrain._backend import array_module; "
            "assert array_module(np.zeros(2)) is np; assert 'jax' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("model", ["rww", "hopf"])
def test_simulation_array_path_runs_on_jax(model):
    """backend='jax': the reference array path, eagerly on JAX arrays, equals the NumPy one (the
    same drift, FIC, noise and Balloon code, only the array module differs)."""
    s = SimulationSettings(duration=1.44, dt=2e-3, bold_dt=2e-3, tr=0.72, burn_in=0.72, fused="never",
                           dtype="float64", seed=4)
    sc = _sc(4)
    ref = Simulation(model, sc, {"G": 0.7}, s, batch=2).run()
    got = Simulation(model, sc, {"G": 0.7}, s.replace(backend="jax"), batch=2).run()
    assert isinstance(got.bold, jax.Array) and got.bold.shape == ref.bold.shape == (2, 2, 4)
    assert np.std(ref.bold) > 0
    np.testing.assert_allclose(np.asarray(got.bold), ref.bold, rtol=0, atol=1e-12 * np.abs(ref.bold).max())


def test_sample_plan_is_the_tr_grid_after_the_burn_in():
    s = SimulationSettings(duration=5.0, dt=1e-3, bold_dt=2e-3, tr=0.72, burn_in=1.5)
    for start, n in [(0, 6500), (0, 719), (1441, 3000), (2000, 1)]:
        k_h, k_tr, m_burn, ms = sample_plan(s, start, n)
        assert (k_h, k_tr, m_burn) == (2, 360, 750)  # 2 ms hemodynamic steps, 0.72 s TR, 1.5 s burn-in
        every = np.arange(1, 100) * 360  # hemodynamic steps ending on a TR
        want = every[(every > 750) & (every > start // 2) & (every <= (start + n) // 2)]
        np.testing.assert_array_equal(ms, want)
    # a fresh JAX run samples at the TRs after the burn-in, as Simulation does
    js = JaxSimulator("hopf", _sc(3), s)
    np.testing.assert_allclose(js.times, Simulation("hopf", _sc(3), {}, s, batch=1).run().times)


def test_fittable_through_prepare_without_naming_the_model():
    """rWW with FIC: w_IE is affine in W_E, w_EE and G·rowsum(SC) (exact JAX derivatives: fittable);
    w_EI enters the bisection of the FIC root solve (its JAX derivative is not FIC's: refused, the
    message quoting prepare()'s FIC); w_IE is overwritten by FIC (refused). FIC off: all fittable."""
    sc = _sc(5)
    s = SimulationSettings(duration=1.44, dt=2e-3, bold_dt=2e-3, tr=0.72, burn_in=0.72, dtype="float64")
    js = JaxSimulator("rww", sc, s)
    for name in ("G", "W_E", "w_EE", "sc", "sigma"):
        assert js.fittable(name) is None, name
    assert "FIC" in js.fittable("w_EI") and "overrides" in js.fittable("w_IE")
    with pytest.raises(ValueError, match="'w_EI'.*FIC"):
        js.model_params({"w_EI": 1.2})
    off = JaxSimulator(get_model("rww", fic=False), sc, s)
    assert off.fittable("w_EI") is None and off.fittable("w_IE") is None
    # the derivative JAX takes in W_E is FIC's own (central difference of the NumPy FIC)
    g = jax.jacfwd(lambda v: js.model_params({"W_E": v})[0]["w_IE"][0])(1.0)
    full = {k: np.broadcast_to(np.asarray(v, float), (1, 5)) for k, v in get_model("rww").params().items()}
    h = 1e-6
    fd = (fic_w_IE({**full, "W_E": full["W_E"] + h}, sc.sum(1)[None])
          - fic_w_IE({**full, "W_E": full["W_E"] - h}, sc.sum(1)[None]))[0] / (2 * h)
    assert np.all(np.abs(fd) > 0.1)
    np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-6)
