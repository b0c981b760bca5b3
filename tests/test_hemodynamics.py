"""Tests of raybrain.hemodynamics (Balloon–Windkessel; Friston 2000/2003, Heinzle 2016)."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from raybrain.hemodynamics import BalloonWindkessel, bold_signal, bw_step, simulate_bold


def test_coefficients_friston2003_rates():
    bw = BalloonWindkessel()  # the defaults: rates convention, Friston 2003 constants
    kappa, gamma, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = bw.coefficients()
    rho = 0.34
    assert (kappa, gamma) == (0.65, 0.41)
    assert inv_tau == pytest.approx(1 / 0.98, rel=1e-15)
    assert inv_alpha == pytest.approx(1 / 0.32, rel=1e-15)
    assert l1r == pytest.approx(np.log(0.66), rel=1e-15)
    assert inv_rho == pytest.approx(1 / rho, rel=1e-15)
    assert V0 == 0.02
    assert (k1, k2, k3) == pytest.approx((7 * rho, 2.0, 2 * rho - 0.2), rel=1e-15)
    assert one == 1.0


def test_coefficients_heinzle3t_time_constants():
    bw = BalloonWindkessel(convention="time_constants", constants="heinzle3t")
    kappa, gamma, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = bw.coefficients()
    rho, TE = 0.34, 0.0331
    assert (kappa, gamma) == pytest.approx((1 / 0.65, 1 / 0.41), rel=1e-15)
    assert inv_alpha == pytest.approx(1 / 0.33, rel=1e-15)
    assert inv_tau == pytest.approx(1 / 0.98, rel=1e-15)
    assert (k1, k2, k3) == pytest.approx((4.3 * 28.265 * 3 * TE * rho, 0.47 * 110 * TE * rho, 0.53), rel=1e-15)
    c32 = bw.coefficients(np.float32)
    assert all(isinstance(c, np.float32) for c in c32)


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="convention.*'rate'"):
        BalloonWindkessel(convention="rate")
    with pytest.raises(ValueError, match="constants.*'friston'"):
        BalloonWindkessel(constants="friston")


@pytest.mark.parametrize("convention", ["rates", "time_constants"])
@pytest.mark.parametrize("constants", ["friston2003", "heinzle3t"])
def test_rest_is_a_fixed_point(convention, constants):
    bw = BalloonWindkessel(convention, constants)
    x = np.zeros((2, 2000, 3))
    bold = simulate_bold(x, 1e-3, 0.5, bw)
    assert bold.shape == (2, 4, 3)
    np.testing.assert_allclose(bold, 0.0, atol=1e-14)
    s, f, v, q = bw.initial_state(2, 3)
    np.testing.assert_array_equal(s, 0.0)
    for a in (f, v, q):
        np.testing.assert_array_equal(a, 1.0)
    # the step itself leaves the rest state in place to rounding
    c = bw.coefficients()
    kappa, gamma, it, ia, l1r, ir, V0, k1, k2, k3, one = c
    out = (s, f, v, q)
    for _ in range(1000):
        out = bw_step(*out, np.zeros((2, 3)), 1e-3, kappa, gamma, it, ia, l1r, ir, one, np.exp, np.log)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-14)
    for a in out[1:]:
        np.testing.assert_allclose(a, 1.0, atol=1e-14)
    assert bold_signal(1.0, 1.0, V0, k1, k2, k3, one) == 0.0


@pytest.mark.parametrize("convention", ["rates", "time_constants"])
@pytest.mark.parametrize("constants", ["friston2003", "heinzle3t"])
def test_steady_state_of_a_constant_input_is_a_fixed_point(convention, constants):
    bw = BalloonWindkessel(convention, constants)
    x = np.array([[0.0, 0.05, 0.164757, 0.5, 1.0]])
    s, f, v, q = bw.steady_state(x)
    # the right-hand sides of the equations (module docstring), written out here, vanish
    kappa, gamma, tau, alpha, rho = bw.kappa, bw.gamma, bw.tau, bw.alpha, bw.rho
    np.testing.assert_allclose(x - kappa * s - gamma * (f - 1), 0.0, atol=1e-15)
    np.testing.assert_allclose(s, 0.0, atol=0)
    np.testing.assert_allclose((f - v ** (1 / alpha)) / tau, 0.0, atol=1e-14)
    np.testing.assert_allclose((f * (1 - (1 - rho) ** (1 / f)) / rho - q * v ** (1 / alpha - 1)) / tau, 0.0, atol=1e-14)
    assert f[0, 0] == 1.0 and v[0, 0] == 1.0 and q[0, 0] == pytest.approx(1.0, rel=1e-15)  # rest for x = 0
    assert np.all(np.diff(f[0]) > 0)  # more input, more inflow
    # initial_state with the input: the same state, per (B, N), in the requested precision
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
        state = bw.initial_state(2, 5, dtype=dtype, x=x.astype(dtype))
        for a, b in zip(state, (s, f, v, q)):
            assert a.dtype == dtype and a.shape == (2, 5)
            np.testing.assert_allclose(a, np.broadcast_to(b, (2, 5)), rtol=2e-7 if dtype == np.float32 else 1e-15)
        # held at its input for 60 s of 1 ms Euler steps, the state does not move
        c = bw.coefficients(dtype)
        out = state
        xin = np.broadcast_to(x, (2, 5)).astype(dtype)
        for _ in range(60000):
            out = bw_step(*out, xin, dtype(1e-3), *c[:6], c[10], np.exp, np.log)
        for a, b in zip(out, state):
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)


@functools.lru_cache(maxsize=None)
def _step_response(convention, dt=1e-3, T=12.0, amp=0.1):
    K = int(round(T / dt))
    x = np.full((1, K, 1), amp)
    bw = BalloonWindkessel(convention)
    kappa, gamma, it, ia, l1r, ir, V0, k1, k2, k3, one = bw.coefficients()
    state = bw.initial_state(1, 1)
    f, bold = [], []
    for t in range(K):
        state = bw_step(*state, x[:, t], dt, kappa, gamma, it, ia, l1r, ir, one, np.exp, np.log)
        f.append(state[1][0, 0])
        bold.append(bold_signal(state[2], state[3], V0, k1, k2, k3, one)[0, 0])
    # cross-check the convenience function on the same input
    np.testing.assert_allclose(simulate_bold(x, dt, dt, bw)[0, :, 0], bold, rtol=1e-12)
    return np.arange(1, K + 1) * dt, np.array(f), np.array(bold), bw


@pytest.mark.parametrize("convention", ["rates", "time_constants"])
def test_step_response_peaks(convention):
    t, f, bold, bw = _step_response(convention)
    assert np.all(f >= 1.0 - 1e-12) and f.max() > 1.0
    # s, f obey the linear oscillator f'' + kappa f' + gamma (f - 1) = x: for a step from rest
    # the first peak of f lies at pi / omega_d, omega_d = sqrt(gamma - kappa^2 / 4)
    omega_d = np.sqrt(bw.gamma - bw.kappa ** 2 / 4)
    t_peak_f = t[np.argmax(f[: int(np.pi / omega_d / 1e-3 * 1.5)])]
    assert t_peak_f == pytest.approx(np.pi / omega_d, abs=0.01)
    # and its height 1 + (x/gamma)(1 + exp(-kappa pi / (2 omega_d)))
    peak = 1 + 0.1 / bw.gamma * (1 + np.exp(-bw.kappa * np.pi / (2 * omega_d)))
    assert f.max() == pytest.approx(peak, rel=1e-3)
    # BOLD rises (positive), peaks seconds after onset and after f has started rising
    i_bold = np.argmax(bold)
    assert bold[i_bold] > 0.0
    assert 1.0 < t[i_bold] < 10.0
    assert bold[int(0.05 / 1e-3)] < 0.1 * bold[i_bold]


def test_conventions_differ_in_time_to_peak():
    t, f_r, b_r, _ = _step_response("rates")
    _, f_t, b_t, _ = _step_response("time_constants")
    tp_r, tp_t = t[np.argmax(b_r)], t[np.argmax(b_t)]
    # kappa and gamma ≈ 2.4x larger in the time-constant convention: a faster, less delayed response
    assert tp_t < tp_r - 1.0
    assert t[np.argmax(f_t)] < t[np.argmax(f_r)]
