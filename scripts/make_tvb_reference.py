"""Build ``tests/fixtures/tvb_rww_dfun.npz``: reference drifts of the reduced Wong–Wang E–I model
(Deco et al. 2014) computed by The Virtual Brain (``tvb-library``), an implementation independent
of raybrain.

Run with a Python that can import TVB (it is *not* a raybrain dependency), e.g.::

    python3.11 -m venv /tmp/tvbenv && /tmp/tvbenv/bin/pip install tvb-library==2.10.0
    /tmp/tvbenv/bin/python scripts/make_tvb_reference.py

What is computed
----------------
TVB's ``tvb.simulator.models.ReducedWongWangExcInh`` (Deco et al. 2014, J Neurosci 34:7886) has

    x_e   = w_p*J_N*S_e - J_i*S_i + W_e*I_o + G*J_N*c_0 + I_ext
    dS_e  = -S_e/tau_e + (1 - S_e)*gamma_e*H_e(x_e)
    x_i   = J_N*S_e - S_i + W_i*I_o + lamda*G*J_N*c_0
    dS_i  = -S_i/tau_i + gamma_i*H_i(x_i)
    H(x)  = (a*x - b) / (1 - exp(-d*(a*x - b)))

where ``c_0`` is the raw network input sum_j C_ij S_e,j that TVB's dfun receives as
``coupling[0]`` (linear coupling with a=1, b=0). This is raybrain's model (science reference §1) with
w_EI = 1 (TVB has no w_EI: the J_N*S_e term of x_i has weight 1), lamda = 0, I_ext = 0 and
gamma_i = 1 (in seconds) — so every fixture row has w_EI = 1.

We call the **numpy path** ``model._numpy_dfun`` (TVB's ``dfun`` dispatches to a numba gufunc; the
script checks that both agree to 1e-12). Neither clamps S to [0, 1]: TVB clamps state in the
integrator (``state_variable_boundaries``), not in dfun. States are drawn inside [0, 1] anyway.

Units (TVB works in milliseconds)
---------------------------------
raybrain (seconds, Hz, nA)           TVB (milliseconds)
  tau_E, tau_I  [s]               -> tau_e, tau_i  = 1000*tau  [ms]
  gamma         [1]               -> gamma_e       = gamma/1000   (0.641 -> 0.641/1000)
  (r_I enters dS_I with weight 1) -> gamma_i       = 1/1000
  a_E, a_I      [nC^-1]           -> a_e, a_i      same numbers (310, 615; TVB says "n/C")
  b_E, b_I      [Hz]              -> b_e, b_i      same numbers (125, 177; H stays in Hz)
  d_E, d_I      [s]               -> d_e, d_i      same numbers (0.16, 0.087)
  I0, J_NMDA    [nA]              -> I_o, J_N      same
  w_EE, w_IE, W_E, W_I, G         -> w_p, J_i, W_e, W_i, G   same (dimensionless)
H is therefore in Hz in both, and since every term of TVB's derivative carries exactly one factor
1/ms (1/tau_ms, or gamma/1000 * Hz), dS/dt [1/s] = 1000 * dS/dt [1/ms]. The fixture stores inputs
in raybrain's names and units and the derivatives in 1/s.

TVB defaults vs the science reference: all match (a_e 310, b_e 125, d_e 0.16, gamma_e 0.641/1000,
tau_e 100 ms, w_p 1.4, J_N 0.15, W_e 1, a_i 615, b_i 177, d_i 0.087, gamma_i 1/1000, tau_i 10 ms,
J_i 1, W_i 0.7, I_o 0.382) except G, whose TVB default is 2.0 (raybrain: free); we set every
parameter explicitly anyway, plus lamda = 0 and I_ext = 0.

States: S_E ~ U[0, 1]; S_I ~ U[0, 1] for even rows and U[0, 0.2] for odd rows (so that I_I is
often above threshold); c_0 ~ U[0, 1.5].

Layout: parameter set 0 is the Deco 2014 defaults (with a random G), sets 1..K-1 are random; each
set is evaluated on the same M random states and inputs. All arrays are flat of length K*M so that
the test can broadcast them elementwise.
"""

from __future__ import annotations

import datetime
import pathlib
import sys

import numpy as np

SEED = 20240611
N_SETS = 4
N_STATES = 64

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tvb_rww_dfun.npz"

# raybrain name -> (default in raybrain units, random range (lo, hi) in raybrain units)
PARAMS = {
    "G": (None, (0.0, 3.0)),
    "w_EE": (1.4, (1.0, 2.0)),
    "w_EI": (1.0, (1.0, 1.0)),  # TVB has no w_EI: fixed at 1
    "w_IE": (1.0, (0.5, 2.0)),
    "I0": (0.382, (0.30, 0.45)),
    "J_NMDA": (0.15, (0.10, 0.20)),
    "W_E": (1.0, (0.8, 1.2)),
    "W_I": (0.7, (0.5, 0.9)),
    "a_E": (310.0, (280.0, 340.0)),
    "b_E": (125.0, (110.0, 140.0)),
    "d_E": (0.16, (0.14, 0.18)),
    "a_I": (615.0, (560.0, 670.0)),
    "b_I": (177.0, (160.0, 195.0)),
    "d_I": (0.087, (0.075, 0.10)),
    "tau_E": (0.100, (0.08, 0.12)),
    "tau_I": (0.010, (0.008, 0.012)),
    "gamma": (0.641, (0.55, 0.75)),
}


def _draw(rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    sets = []
    for k in range(N_SETS):
        p = {}
        for name, (default, (lo, hi)) in PARAMS.items():
            if k == 0 and default is not None:
                p[name] = default
            else:
                p[name] = float(rng.uniform(lo, hi))
        sets.append(p)
    S_E = rng.uniform(0.0, 1.0, N_SETS * N_STATES)
    # Half the S_I draws in [0, 0.2] so that the inhibitory population is also driven above its
    # threshold (a_I*I_I > b_I) often enough; with S_I ~ U[0, 1] alone it rarely is.
    S_I = rng.uniform(0.0, 1.0, N_SETS * N_STATES)
    S_I[1::2] *= 0.2
    c0 = rng.uniform(0.0, 1.5, N_SETS * N_STATES)
    flat = {name: np.repeat([s[name] for s in sets], N_STATES).astype(np.float64) for name in PARAMS}
    return flat, S_E, S_I, c0


def _tvb_model(p: dict):
    """A configured TVB model whose parameters are the flat arrays ``p`` (raybrain units)."""
    from tvb.simulator.models import ReducedWongWangExcInh

    ms = 1000.0
    m = ReducedWongWangExcInh(
        G=p["G"],
        w_p=p["w_EE"],
        J_N=p["J_NMDA"],
        J_i=p["w_IE"],
        W_e=p["W_E"],
        W_i=p["W_I"],
        I_o=p["I0"],
        I_ext=np.zeros_like(p["G"]),
        lamda=np.zeros_like(p["G"]),
        a_e=p["a_E"],
        b_e=p["b_E"],
        d_e=p["d_E"],
        a_i=p["a_I"],
        b_i=p["b_I"],
        d_i=p["d_I"],
        tau_e=p["tau_E"] * ms,
        tau_i=p["tau_I"] * ms,
        gamma_e=p["gamma"] / ms,
        gamma_i=np.full_like(p["G"], 1.0 / ms),
    )
    m.configure()
    return m


def main() -> int:
    import tvb
    from importlib.metadata import version

    tvb_version = version("tvb-library")
    rng = np.random.default_rng(SEED)
    p, S_E, S_I, c0 = _draw(rng)
    if np.any(p["w_EI"] != 1.0):
        raise ValueError("TVB's ReducedWongWangExcInh has no w_EI; the fixture needs w_EI == 1")

    m = _tvb_model(p)
    n = S_E.size
    state = np.stack([S_E, S_I])  # (nvar=2, n): every parameter array is (n,), broadcasts elementwise
    coupling = c0[np.newaxis, :]  # (ncvar=1, n)
    d_ms = np.asarray(m._numpy_dfun(state, coupling, local_coupling=0.0))  # (2, n), per ms
    if d_ms.shape != (2, n):
        raise RuntimeError(f"unexpected TVB dfun shape {d_ms.shape}")

    # Cross-check against TVB's numba path (x: (nvar, nnode, nmode), c: (ncvar, nnode, nmode)).
    d_nb = m.dfun(state[..., np.newaxis], coupling[..., np.newaxis])[..., 0]
    if not np.allclose(d_nb, d_ms, rtol=1e-12, atol=0.0):
        raise RuntimeError("TVB numpy and numba dfun disagree")

    dSE = d_ms[0] * 1000.0  # 1/ms -> 1/s
    dSI = d_ms[1] * 1000.0
    if not (np.all(np.isfinite(dSE)) and np.all(np.isfinite(dSI))):
        raise RuntimeError("non-finite TVB derivative")

    meta = (
        f"TVB tvb-library {tvb_version} (module tvb {getattr(tvb, '__file__', '?')}); "
        f"model tvb.simulator.models.ReducedWongWangExcInh._numpy_dfun; "
        f"created {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; "
        f"seed {SEED}; {N_SETS} parameter sets x {N_STATES} states (set 0 = Deco 2014 defaults, random G); "
        "TVB in ms: tau_ms = 1000*tau_s, gamma_e = gamma/1000, gamma_i = 1/1000, a/b/d unchanged "
        "(nC^-1, Hz, s); dS/dt stored in 1/s = 1000 * TVB's per-ms dfun; lamda = 0, I_ext = 0, "
        "w_EI = 1 (TVB has no w_EI); c0 = raw sum_j C_ij S_E,j (TVB coupling[0]); no clamping in dfun"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        S_E=S_E,
        S_I=S_I,
        c0=c0,
        dSE_dt=dSE,
        dSI_dt=dSI,
        tvb_version=np.array(tvb_version),
        meta=np.array(meta),
        **p,
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), {n} points, tvb-library {tvb_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
