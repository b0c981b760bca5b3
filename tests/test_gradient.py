"""Gradient-based fitting (raybrain.gradient, raybrain.search.gradient): the JAX simulation equals
the NumPy reference path, jax.grad matches finite differences, and a synthetic G is recovered.
Skipped without the optional ``jax`` extra."""
import time

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="gradient-based fitting needs the optional 'jax' extra "
                                        "(pip install 'raybrain[jax]')")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

from raybrain import data  # noqa: E402
from raybrain.gradient import JaxSimulator, adam_fit, fc_loss, fc_matrix, vector_loss  # noqa: E402
from raybrain.integrate import Simulation, SimulationSettings  # noqa: E402
from raybrain.models import get_model  # noqa: E402
from raybrain.models.rww import fic_w_IE  # noqa: E402
from raybrain.objective import scale_sc  # noqa: E402
from raybrain.search import get_optimizer  # noqa: E402
from raybrain.search.gradient import GradientDescent, refine  # noqa: E402


@pytest.fixture(scope="module")
def sc():
    return scale_sc(data.load_subject("hcp/101309").sc, 0.2)


def _short(**kw):
    base = dict(duration=2.88, dt=1e-3, tr=0.72, burn_in=0.72, fused="never", dtype="float64", seed=3)
    base.update(kw)
    return SimulationSettings(**base)


def test_forward_matches_numpy_reference(sc):
    """Same model functions, same counter-based noise: the JAX scan equals Simulation._run_array."""
    s = _short()
    sub = sc[:16, :16]
    w = np.linspace(1.2, 1.6, 16)
    ref = Simulation("rww", sub, {"G": 1.7, "sigma": 0.004, "w_EE": w}, s, batch=2).run().bold
    js = JaxSimulator("rww", sub, s, repeats=2)
    bold = np.asarray(js.bold({"G": 1.7, "sigma": 0.004, "w_EE": jnp.asarray(w)}))
    assert bold.shape == ref.shape == (2, 4, 16)
    np.testing.assert_allclose(bold, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert np.max(np.abs(bold - ref)) < 1e-12
    np.testing.assert_allclose(js.times, np.arange(2, 6) * 0.72)


def test_forward_matches_without_fic_and_without_balloon(sc):
    sub = sc[:8, :8]
    s = _short(hemodynamics="none", dt=5e-4, bold_dt=1e-3)
    model = get_model("rww", fic=False)
    ref = Simulation(model, sub, {"G": 0.8}, s, batch=1).run().bold
    bold = np.asarray(JaxSimulator(model, sub, s).bold({"G": 0.8}))
    np.testing.assert_allclose(bold, ref, rtol=0, atol=1e-12)


def test_fic_coefficients_equal_model_fic(sc):
    sub = sc[:10, :10]
    js = JaxSimulator("rww", sub, _short())
    w = np.linspace(1.0, 2.0, 10)
    p, _ = js.model_params({"G": 1.3, "w_EE": w})
    full = {k: np.broadcast_to(v, (1, 10)) for k, v in get_model("rww").params(G=1.3, w_EE=w).items()}
    np.testing.assert_allclose(np.asarray(p["w_IE"])[0], fic_w_IE(full, sub.sum(1)[None])[0], rtol=1e-13)
    with pytest.raises(ValueError, match="FIC"):
        js.model_params({"w_EI": 1.2})
    with pytest.raises(ValueError, match="unknown parameter"):
        js.model_params({"nope": 1.0})


def test_grad_matches_central_difference(sc):
    sub = sc[:12, :12]
    s = _short(duration=5.76, burn_in=1.44)
    js = JaxSimulator("rww", sub, s, repeats=2)
    emp = np.corrcoef(np.asarray(JaxSimulator("rww", sub, s, first_stream=9).bold({"G": 2.0}))[0].T)

    def loss(G):
        return js.loss({"G": G}, emp, mse_weight=1.0)

    f = jax.jit(loss)
    G, h = 1.5, 1e-4
    g = float(jax.jit(jax.grad(loss))(G))
    fd = (float(f(G + h)) - float(f(G - h))) / (2 * h)
    assert abs(g - fd) <= 1e-4 * abs(fd), (g, fd)
    # the same code differentiates regional parameters and the full SC (pytree decides)
    gr = jax.grad(lambda th: js.loss(th, emp))({"G": 1.5, "w_EE": jnp.full(12, 1.4), "sc": jnp.asarray(sub)})
    assert gr["w_EE"].shape == (12,) and gr["sc"].shape == (12, 12)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in gr.values())


def test_truncation_and_checkpoint_forward_identical(sc):
    sub = sc[:6, :6]
    s = _short(duration=2.88)
    a = JaxSimulator("rww", sub, s, checkpoint=False)
    b = JaxSimulator("rww", sub, s, checkpoint=True, truncate=2, grad_burn_in=False)
    np.testing.assert_array_equal(np.asarray(a.bold({"G": 1.0})), np.asarray(b.bold({"G": 1.0})))
    emp = np.corrcoef(np.random.default_rng(1).standard_normal((40, 6)).T)
    ga = float(jax.grad(lambda G: a.loss({"G": G}, emp))(1.0))
    gb = float(jax.grad(lambda G: b.loss({"G": G}, emp))(1.0))
    assert np.isfinite(ga) and np.isfinite(gb) and ga != gb  # truncated BPTT: a different (biased) gradient


def test_jax_noise_mode_runs_in_float32(sc):
    s = _short(dtype="float32")
    bold = np.asarray(JaxSimulator("rww", sc[:5, :5], s, noise="jax", repeats=2).bold({"G": 1.0}))
    assert bold.dtype == np.float32 and bold.shape == (2, 4, 5) and np.all(np.isfinite(bold))
    assert not np.allclose(bold[0], bold[1])


def _recovery_problem(sc, n=20, duration=72.0, burn_in=72.0):
    sub = sc[:n, :n]
    s = SimulationSettings(duration=duration, dt=2e-3, bold_dt=2e-3, tr=0.72, burn_in=burn_in, dtype="float64",
                           seed=1)
    target = JaxSimulator("rww", sub, s.replace(duration=2 * duration), repeats=4, first_stream=100)
    emp = np.asarray(fc_matrix(target.bold({"G": 1.6})).mean(0))
    fit = JaxSimulator("rww", sub, s.replace(seed=0), repeats=2, grad_burn_in=False)
    return fit, emp


def test_recover_global_coupling(sc):
    """Synthetic subject (20 regions of hcp/101309, SC max 0.2, G = 1.6, sigma fixed): Adam from
    G = 0.6 on the FC squared error must shrink the error at least 4-fold."""
    t0 = time.perf_counter()
    fit, emp = _recovery_problem(sc)
    res = adam_fit(lambda th: fit.loss(th, emp, corr_weight=0.0, mean_weight=1.0),
                   {"G": np.array(0.6)}, {"G": (0.0, 3.0)}, steps=14, lr=0.08, lr_decay=0.85)
    G = float(res.final_theta["G"])
    assert abs(G - 1.6) < abs(0.6 - 1.6) / 4, [h["theta"]["G"] for h in res.history]
    print(f"recovered G = {G:.4f} (truth 1.6) in {time.perf_counter() - t0:.1f} s")


def test_gradient_optimizer_ask_tell_and_refine(sc):
    fit, emp = _recovery_problem(sc, n=8, duration=36.0, burn_in=36.0)
    f = vector_loss(fit, ["G"], emp, corr_weight=0.0, mean_weight=1.0)
    opt = get_optimizer("gradient", [[0.0, 3.0]], loss_fn=f, x0=[0.6], lr=0.1, lr_decay=0.85,
                        inner_steps=2, max_generations=6)
    assert isinstance(opt, GradientDescent)
    first = opt.ask()
    np.testing.assert_allclose(first, [[0.6]])
    l0 = float(f(jnp.asarray(first[0])))
    opt.tell(first, [l0])
    while not opt.done:
        th = opt.ask()
        opt.tell(th, [float(f(jnp.asarray(th[0])))])
    assert opt.generation >= 2 and opt.best_loss <= l0 and np.isfinite(opt.last_grad_norm[0])
    assert opt._t[0] >= 2  # Adam steps were taken
    # checkpoint without the loss, re-attach
    again = GradientDescent.from_state(opt.state())
    assert again._loss_fn is None and again.attach(f)._loss_fn is f
    # explore-then-refine: the K best of a coarse search become the starts
    thetas = np.array([[0.2], [2.9], [1.2], [2.0]])
    r = refine((thetas, [3.0, 2.0, 1.0, 1.5], [[0.0, 3.0]]), k=2, loss_fn=f)
    np.testing.assert_allclose(r.ask(), [[1.2], [2.0]])
    with pytest.raises(ValueError, match="loss_fn"):
        g = get_optimizer("gradient", [[0.0, 3.0]])
        g.tell(g.ask(), [1.0])
        g.ask()


def test_fc_loss_matches_numpy_features():
    from raybrain import features as F

    rng = np.random.default_rng(0)
    bold = rng.standard_normal((3, 50, 7))
    emp = np.corrcoef(rng.standard_normal((50, 7)).T)
    want = np.mean([1 - F.corr_upper(F.fc(b), emp) + abs(F.mean_fc(F.fc(b)) - F.mean_fc(emp)) for b in bold])
    assert abs(float(fc_loss(jnp.asarray(bold), emp)) - want) < 1e-12
