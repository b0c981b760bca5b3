"""Gradient-based fitting (raybrain.jax_backend, raybrain.losses.differentiable, raybrain.search.gradient):
the JAX simulation equals the NumPy reference path, jax.grad matches finite differences, and a
synthetic G is recovered. Skipped without the optional ``jax`` extra."""
import time

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="gradient-based fitting needs the optional 'jax' extra "
                                        "(pip install 'raybrain[jax]')")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

from raybrain import data  # noqa: E402
from raybrain.integrate import Simulation, SimulationSettings  # noqa: E402
from raybrain.jax_backend import JaxSimulator  # noqa: E402
from raybrain.losses.differentiable import fc_loss, fc_matrix, vector_loss  # noqa: E402
from raybrain.models import get_model  # noqa: E402
from raybrain.models.rww import fic_w_IE  # noqa: E402
from raybrain.objective import scale_sc  # noqa: E402
from raybrain.search import get_optimizer  # noqa: E402
from raybrain.search.gradient import GradientDescent, adam_fit, refine  # noqa: E402


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


# ------------------------------------------------------------------ the smoothed KS stand-in
def test_soft_ks_tends_to_exact_ks_and_has_a_gradient():
    """Known answer: as h -> 0 the smoothed KS distance equals the exact two-sample KS statistic
    (raybrain.features.ks_distance, = scipy's ks_2samp); at h > 0 it has a nonzero gradient where
    the exact statistic's is zero almost everywhere."""
    from raybrain import features as F
    from raybrain.losses.differentiable import soft_ks

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 40)) * 0.3, rng.standard_normal(55) * 0.3 + 0.1
    exact = F.ks_distance(a, b)
    assert exact.shape == (3,) and np.all(exact > 0.05)
    np.testing.assert_allclose(np.asarray(soft_ks(jnp.asarray(a), b, 1e-9)), exact, rtol=0, atol=1e-12)
    # a hand-computed case: a = {0, 1}, b = {2}: F_a - F_b reaches 1 between 1 and 2
    assert float(soft_ks(jnp.asarray([0.0, 1.0]), [2.0], 1e-9)) == pytest.approx(1.0, abs=1e-12)
    assert float(soft_ks(jnp.asarray([0.0, 2.0]), [1.0], 1e-9)) == pytest.approx(0.5, abs=1e-12)
    # larger h: a smaller, smooth distance, with a gradient
    assert float(soft_ks(jnp.asarray(a[0]), b, 0.1)) < exact[0]
    g = np.asarray(jax.grad(lambda x: soft_ks(x, b, 0.05))(jnp.asarray(a[0])))
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-3
    # the grid variant converges to the exact value too (up to the grid's resolution)
    fine = float(soft_ks(jnp.asarray(a[0]), b, 1e-9, points=20001))
    assert abs(fine - exact[0]) <= 1.0 / 40 + 1e-12
    # Cramér–von Mises-like variant: zero for identical samples, positive otherwise
    assert float(soft_ks(jnp.asarray(b), b, 0.05, kind="cvm")) == pytest.approx(0.0, abs=1e-15)
    assert float(soft_ks(jnp.asarray(a[0]), b, 0.05, kind="cvm")) > 0


def test_fcd_distribution_matches_numpy_features():
    from raybrain import features as F
    from raybrain.losses.differentiable import fcd_distribution

    bold = np.random.default_rng(2).standard_normal((2, 61, 6))
    got = np.sort(np.asarray(fcd_distribution(jnp.asarray(bold), 20, 3)), axis=-1)
    np.testing.assert_allclose(got, F.fcd_distribution(bold, 20, 3), rtol=0, atol=1e-13)


# ------------------------------------------------------------------ the objective's loss, differentiable
SYN = "syn"


def _gcfg(tmp, optimizers=None, *, names=("G",), par=None, budget=6, loss="pfic", dtype="float32", repeats=2,
          params=None, model="hopf", validation=0):
    """A tiny synthetic-subject experiment: Hopf (no hemodynamics) on hcp/101309 at dt 0.08 s,
    86.4 s of BOLD (120 TRs), FCD windows of 20 TRs every 2."""
    from raybrain.experiment import ExperimentConfig

    box = {"G": [0.1, 1.0], "sigma": [0.01, 0.1]}
    par = par or {"kind": "global", "names": list(names), "bounds": {k: box[k] for k in names if k in box}}
    d = {"name": "grad", "storage": str(tmp),
         "subjects": {"synthetic": [{"name": SYN, "from_subject": "hcp/101309", "params": params or {"G": 0.5},
                                     "seed": 5}]},
         "model": {"name": model}, "parametrisation": par, "loss": loss,
         "simulation": {"fidelities": [{"duration": 86.4, "dt": 0.08}], "burn_in": 7.2, "noise": "common",
                        "window": 20, "step": 2, "repeats": repeats, "dtype": dtype},
         "optimizers": optimizers or [{"name": "gradient", "population": 1}],
         "budget": {"evaluations": budget}, "validation": {"top": validation}}
    return ExperimentConfig.model_validate(d)


def test_objective_loss_equals_the_objectives_pfic_loss(tmp_path):
    """Known answer: with the objective's own noise stream, one repeat and h -> 0, the differentiable
    stand-in is the objective's pfic loss ((1 - r) + |Δ mean FC| + exact KS) of the same candidate."""
    from raybrain.losses.differentiable import ObjectiveLoss

    cfg = _gcfg(tmp_path, names=("G", "sigma"), dtype="float64")
    obj = cfg.build_objective(SYN)
    theta = np.array([0.42, 0.03])
    want = obj.evaluate(theta[None], seed=77, repeats=1)[0]
    f = ObjectiveLoss(obj, seed=77, repeats=1, fcd_bandwidth=1e-10, fcd_points=None)
    f.sim.streams = np.array([0])  # the candidate's stream instead of the gradient streams
    got = f.components(jnp.asarray(theta), 0)
    assert float(got["fc"]) == pytest.approx(want["fc_corr_cost"] + want["fc_mean_diff"], abs=1e-9)
    assert float(got["fcd"]) == pytest.approx(want["fcd_ks"], abs=1e-9)
    assert float(got["total"]) == pytest.approx(want["loss"], abs=1e-9)
    # the gradient streams are other realisations: another value
    assert float(ObjectiveLoss(obj, seed=77, repeats=1)(jnp.asarray(theta))) != pytest.approx(want["loss"], abs=1e-6)


@pytest.mark.parametrize("kind", ["regional", "maps"])
def test_objective_loss_gradient_regional_and_maps(tmp_path, kind):
    """Regional (N values) and maps parametrisations: vector_params on NumPy equals to_model_params,
    and the JAX gradient agrees with a central difference along a random direction."""
    from raybrain.losses.differentiable import ObjectiveLoss

    par = ({"kind": "regional", "parameter": "a", "globals": ["G"], "bounds": {"a": [-0.2, 0.2], "G": [0.1, 1.0]}}
           if kind == "regional" else
           {"kind": "maps", "regional": ["a"], "globals": ["G"], "bounds": {"G": [0.1, 1.0]}})
    cfg = _gcfg(tmp_path, par=par, dtype="float64", params={"G": 0.5})
    obj = cfg.build_objective(SYN)
    p = obj.parametrisation
    rng = np.random.default_rng(4)
    theta = p.bounds[:, 0] + (0.3 + 0.4 * rng.random(p.size)) * (p.bounds[:, 1] - p.bounds[:, 0])
    ref = p.to_model_params(theta[None])
    mine = p.vector_params(theta, np)
    for k, v in ref.items():
        np.testing.assert_array_equal(np.asarray(mine[k], np.float64), np.asarray(v)[0])
    f = ObjectiveLoss(obj, seed=1, repeats=2, fcd_bandwidth=0.1, grad_burn_in=True)  # exact gradient
    g = np.asarray(jax.grad(lambda t: f(t, 3))(jnp.asarray(theta)))
    assert g.shape == (p.size,) and np.all(np.isfinite(g)) and np.any(g != 0)
    d = rng.standard_normal(p.size) * (p.bounds[:, 1] - p.bounds[:, 0])
    d /= np.linalg.norm(d)
    h = 1e-5 * np.linalg.norm(p.bounds[:, 1] - p.bounds[:, 0])
    fj = jax.jit(f)
    fd = (float(fj(jnp.asarray(theta + h * d), 3)) - float(fj(jnp.asarray(theta - h * d), 3))) / (2 * h)
    assert abs(g @ d - fd) <= 1e-4 * max(abs(fd), 1e-3), (g @ d, fd)


def test_attach_objective_refuses_fic_parameters(tmp_path):
    cfg = _gcfg(tmp_path, model="rww", par={"kind": "global", "names": ["G", "w_EI"]}, params={"G": 1.5})
    obj = cfg.build_objective(SYN)
    opt = get_optimizer("gradient", obj.parametrisation.bounds)
    with pytest.raises(ValueError, match="'w_EI'.*FIC"):
        opt.attach_objective(obj, seed=0, repeats=1)


# ------------------------------------------------------------------ explore, then refine
def _quadratic(c):
    c = jnp.asarray(c)
    return lambda th: jnp.sum((th - c) ** 2)


def test_explore_then_refine_starts_at_the_k_best_told():
    """Known answer with a toy quadratic: the explore stage asks exactly what the coarse optimizer
    (random, same seed) asks; the refine stage starts at the K best told points, and its first ask
    is one Adam step from each: u - lr·sign(∂L/∂u) in the unit box (Adam's first step has size lr)."""
    from raybrain.search.random import RandomSearch

    bounds = np.array([[0.0, 4.0], [-1.0, 1.0]])
    c = np.array([1.0, 0.2])
    loss = _quadratic(c)

    def run(seed):
        opt = get_optimizer("gradient", bounds, seed=seed, loss_fn=loss, lr=0.05, refine_top=3,
                            explore={"name": "random", "evaluations": 10, "population": 4})
        ref = RandomSearch(bounds, seed=seed, population=4)
        asks, told = [], []
        while opt.stage == "explore" or len(asks) < 6:
            th = opt.ask()
            if opt.stage == "explore":
                want = ref.ask()[:len(th)]
                np.testing.assert_array_equal(th, want)
                ref.tell(want, np.zeros(len(want))) if len(want) == 4 else None
            asks.append(th)
            y = np.array([float(loss(jnp.asarray(t))) for t in th])
            if opt.stage == "explore":
                told.append((th, y))
            opt.tell(th[::-1], y[::-1])  # tell order is free
            if len(asks) == 5:  # checkpoint mid-refine: restored, re-attached, it continues identically
                opt = GradientDescent.from_state(opt.state()).attach(loss)
        return opt, asks, told

    opt, asks, told = run(7)
    assert [len(a) for a in asks[:3]] == [4, 4, 2]  # 10 explore evaluations, the last ask cut to 2
    thetas = np.concatenate([t for t, _ in told])
    ys = np.concatenate([y for _, y in told])
    best3 = thetas[np.argsort(ys)[:3]]
    np.testing.assert_array_equal(opt.refine_starts, best3)
    span = bounds[:, 1] - bounds[:, 0]
    u0 = (best3 - bounds[:, 0]) / span
    grad_u = 2 * (best3 - c) * span
    # Adam's first step: m̂ = g, v̂ = g², step = lr · g / (|g| + eps) (eps = 1e-8)
    want = bounds[:, 0] + span * np.clip(u0 - 0.05 * grad_u / (np.abs(grad_u) + 1e-8), 0, 1)
    np.testing.assert_allclose(asks[3], want, rtol=0, atol=1e-12)
    assert opt.population == 3 and opt.stage == "refine"
    # the refine iterates approach the minimum; the run is deterministic given the seed
    assert np.all(np.linalg.norm(asks[-1] - c, axis=1) < np.linalg.norm(best3 - c, axis=1))
    _, asks2, _ = run(7)
    for a, b in zip(asks, asks2):
        np.testing.assert_array_equal(a, b)
    _, asks3, _ = run(8)
    assert not np.array_equal(asks[0], asks3[0])


def test_explore_settings_are_checked():
    b = [[0.0, 1.0]]
    with pytest.raises(ValueError, match="explore.name"):
        get_optimizer("gradient", b, explore={"name": "gradient", "evaluations": 4})
    with pytest.raises(ValueError, match="explore.evaluations"):
        get_optimizer("gradient", b, explore={"name": "random", "evaluations": 0})
    with pytest.raises(ValueError, match="refine_top"):
        get_optimizer("gradient", b, refine_top=5, explore={"name": "random", "evaluations": 4})
    with pytest.raises(ValueError, match="unknown key 'pop'"):
        get_optimizer("gradient", b, explore={"name": "random", "evaluations": 4, "pop": 2})
    with pytest.raises(ValueError, match="unknown setting"):
        get_optimizer("gradient", b, explore={"name": "random", "evaluations": 4, "settings": {"sigma0": 1}})


# ------------------------------------------------------------------ end to end on Ray Tune
TRUE_G = 0.5
GRAD_SETTINGS = {"x0": [0.15], "lr": 0.1}
EXPLORE_SETTINGS = {"explore": {"name": "random", "evaluations": 4, "population": 4}, "refine_top": 1, "lr": 0.1}


@pytest.mark.slow
def test_gradient_family_end_to_end_on_tune(ray_local, tmp_path):
    """``gradient`` alone and as explore-then-refine, through run_experiment on a synthetic Hopf
    subject (true G = 0.5, sigma fixed): no trial errors, one record per generation, and each run's
    candidates are exactly those of the same optimizer replayed here with the loss built from the
    same objective, noise seed (noise_seed(seed, 0)) and repeats — so the trainable wired the
    objective in; the gradient run moves from G = 0.15 toward the truth and its loss goes down."""
    from raybrain import results as R
    from raybrain.search.random import RandomSearch
    from raybrain.tuning import noise_seed, run_experiment

    opts = [{"name": "gradient", "population": 1, "settings": GRAD_SETTINGS},
            {"name": "gradient", "label": "grad-explore", "settings": EXPLORE_SETTINGS}]
    cfg = _gcfg(tmp_path, opts, budget=6)
    root, errors = run_experiment(cfg)
    assert errors == 0
    ev = R.load(root).evaluations
    ev = ev[ev["phase"] == "train"]
    obj = cfg.build_objective(SYN)
    bounds = obj.parametrisation.bounds
    for label, settings, pop in (("gradient", GRAD_SETTINGS, 1), ("grad-explore", EXPLORE_SETTINGS, 16)):
        rows = ev[ev["optimizer"] == label].sort_values("eval_index").reset_index(drop=True)
        assert rows["eval_index"].tolist() == list(range(len(rows))) and len(rows) >= 6
        gens = sorted(rows["generation"].unique())
        assert gens == list(range(len(gens)))
        replay = get_optimizer("gradient", bounds, seed=0, population=pop, **settings)
        replay.attach_objective(obj, seed=noise_seed(0, 0), repeats=2)
        for g in gens:
            r = rows[rows["generation"] == g]
            th = replay.ask()
            np.testing.assert_allclose(r[["G"]].to_numpy(), th, rtol=0, atol=1e-9)
            replay.tell(th, r["loss"].to_numpy())
        if label == "grad-explore":  # the coarse stage is the random family's own asks
            np.testing.assert_array_equal(rows["G"].to_numpy()[:4], RandomSearch(bounds, seed=0, population=4).ask()[:, 0])
            assert len(rows) == 6 and rows["generation"].tolist() == [0, 0, 0, 0, 1, 2]
            best4 = rows["G"].to_numpy()[np.argmin(rows["loss"].to_numpy()[:4])]
            assert abs(rows["G"][4] - best4) == pytest.approx(0.1 * 0.9, rel=1e-6)  # one Adam step of lr·range
    g = ev[ev["optimizer"] == "gradient"].sort_values("eval_index")
    G, loss = g["G"].to_numpy(), g["loss"].to_numpy()
    assert G[0] == pytest.approx(0.15) and len(G) == 6
    assert abs(G[-1] - TRUE_G) < 0.5 * abs(G[0] - TRUE_G), G
    assert loss.min() < loss[0] and abs(G[np.argmin(loss)] - TRUE_G) < abs(G[0] - TRUE_G), (G, loss)
