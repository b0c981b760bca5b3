"""The fused CPU path: the whole rWW + Balloon–Windkessel time loop in one numba kernel.

One compiled loop per batch element (parallel over the batch with ``prange``) does the network
coupling, the counter-based noise, the rWW update with clipping, the hemodynamics at their own
step, the TR sampling and the running summaries, keeping the state in cache. It reuses the
model's own equations (:func:`raybrain.models.rww.currents_and_rates`,
:func:`~raybrain.models.rww.gating_drift`, :func:`raybrain.hemodynamics.bw_derivatives`), inlined with
vectorisable maths in float32 (:mod:`raybrain._fastmath`) or libm in float64, and is held to the
array reference of :mod:`raybrain.integrate` by ``tests/test_integrate.py`` on the same noise.

Compiling a kernel variant takes ~10 s, so the variants persist on disk across processes (every
Ray worker would otherwise pay it again): :mod:`raybrain._kernel_cache` writes each variant (kind
x dtype x tile width x uniform flags) as a generated module and caches its compiled code, bit for
bit the code compiled in-process. Where: ``$RAYBRAIN_CACHE_DIR`` (empty: off), else
``$XDG_CACHE_HOME/raybrain/kernels`` or ``~/.cache/raybrain/kernels``; stale files (another
source hash) are never read; the directory may be deleted at any time.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from . import hemodynamics, random
from ._fastmath import column_matvec, exp32, lane_matmul, log32, phi32, phi64, sincos_turns32
from ._kernel_cache import build_kernel
from .models import rww
from .random import GOLDEN

# the model's own equations, compiled for inlining into the loop (one source for every path)
_inline = njit(error_model="numpy", inline="always")
fmix64 = _inline(random.fmix64)
currents_and_rates = _inline(rww.currents_and_rates)
gating_drift = _inline(rww.gating_drift)
bw_derivatives = _inline(hemodynamics.bw_derivatives)
bold_signal = _inline(hemodynamics.bold_signal)

_S32 = np.uint64(32)
_LO32 = np.uint64(0xFFFFFFFF)

#: parameters a fit usually varies from candidate to candidate (FIC's w_IE follows G, w_EE):
#: read per element by every kernel variant, never hoisted as batch-wide scalars
SEARCHED = frozenset({"G", "sigma", "w_EE", "w_EI", "w_IE"})

# order of the rows of the packed parameter array (B, P, N)
RWW_PARAM_ORDER = ("G", "sigma", "w_EE", "w_EI", "w_IE", "I0", "J_NMDA", "W_E", "W_I",
                   "a_E", "b_E", "d_E", "a_I", "b_I", "d_I", "tau_E", "tau_I", "gamma")


@njit(error_model="numpy", inline="always")
def _exp64(x):
    return np.exp(x)


@njit(error_model="numpy", inline="always")
def _log64(x):
    return np.log(x)


@njit(fastmath=True, error_model="numpy", inline="always")
def _halves32(z):
    """The high and low 32 bits of the hash ``z`` as float32 (exact up to float32 rounding)."""
    return np.float32(z >> _S32), np.float32(z & _LO32)


@njit(fastmath=True, error_model="numpy", inline="always")
def _box_muller32(hi, lo):
    u1 = (hi + np.float32(0.5)) * np.float32(2.0 ** -32)
    u2 = lo * np.float32(2.0 ** -32)
    r = np.sqrt(np.float32(-2.0) * log32(u1))
    s, c = sincos_turns32(u2)
    return r * c, r * s


@njit(fastmath=True, error_model="numpy", inline="always")
def _normals32(z):
    hi, lo = _halves32(z)
    return _box_muller32(hi, lo)


@njit(error_model="numpy", inline="always")
def _halves64(z):
    return np.float64(z >> _S32), np.float64(z & _LO32)


@njit(error_model="numpy", inline="always")
def _box_muller64(hi, lo):
    u1 = (hi + 0.5) * 2.0 ** -32
    u2 = lo * 2.0 ** -32
    r = np.sqrt(-2.0 * np.log(u1))
    a = 2.0 * np.pi * u2
    return r * np.cos(a), r * np.sin(a)


@njit(error_model="numpy", inline="always")
def _normals64(z):
    hi, lo = _halves64(z)
    return _box_muller64(hi, lo)


def _make_rww_kernel(phi, exp, log, halves, box_muller, fastmath):
    """The fused loop for one batch element per ``prange`` iteration (only with ``lanes=0``: its
    network sum is vectorised over ``j`` in float32 and unfused in float64, so its results differ in
    the last bits from the tiled kernel's, which the default path uses for every batch size)."""
    @njit(parallel=True, fastmath=fastmath, error_model="numpy", nogil=True)
    def kernel(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subj, PAR, keys,
               step0, n_steps, dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out):
        B, N = SE.shape
        kappa, gam_h, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = coef
        zero = one - one
        sqdt = np.sqrt(dt)
        for b in prange(B):
            sb = subj[b]
            key = keys[b]
            se = SE[b].copy()
            si = SI[b].copy()
            s_ = hs[b].copy()  # the hemodynamic state: float64 (raybrain.hemodynamics, precision)
            f_ = hf[b].copy()
            v_ = hv[b].copy()
            q_ = hq[b].copy()
            ac = acc[b].copy()
            sr = sum_rE[b].copy()
            sse = sum_SE[b].copy()
            ssi = sum_SI[b].copy()
            c = np.empty_like(se)
            nE = np.empty_like(se)
            nI = np.empty_like(se)
            rb = np.empty_like(se)
            h32 = np.empty((4, N), dtype=se.dtype)  # the state rounded to the simulation's dtype
            blk_r = np.zeros_like(se)  # float32 block sums, flushed into the float64 sums
            blk_e = np.zeros_like(se)  # once per hemodynamic step (a conditional float64
            blk_i = np.zeros_like(se)  # accumulate in the step loop blocks vectorisation)
            P = PAR[b]
            C = CS[sb]
            amp = P[1] * sqdt
            o = 0
            for t in range(n_steps):
                step = step0 + t
                # network input c_i = sum_j C_ij S_E,j, four rows at a time
                for i in range(0, N - 3, 4):
                    a0 = zero
                    a1 = zero
                    a2 = zero
                    a3 = zero
                    r0 = C[i]
                    r1 = C[i + 1]
                    r2 = C[i + 2]
                    r3 = C[i + 3]
                    for j in range(N):
                        sj = se[j]
                        a0 += r0[j] * sj
                        a1 += r1[j] * sj
                        a2 += r2[j] * sj
                        a3 += r3[j] * sj
                    c[i] = a0
                    c[i + 1] = a1
                    c[i + 2] = a2
                    c[i + 3] = a3
                for i in range(N - N % 4, N):
                    a0 = zero
                    for j in range(N):
                        a0 += C[i, j] * se[j]
                    c[i] = a0
                # LLVM gives up vectorising a loop that touches too many arrays, so the step
                # is split into short loops: noise (two), update, running sums
                base = np.uint64(step * N)
                for i in range(N):  # the hash halves first, then Box-Muller (see the tiled kernel)
                    nE[i], nI[i] = halves(fmix64(((base + np.uint64(i)) * GOLDEN) ^ key))
                for i in range(N):
                    nE[i], nI[i] = box_muller(nE[i], nI[i])
                for i in range(N):
                    _, _, rE, rI = currents_and_rates(
                        se[i], si[i], c[i], P[0, i], P[2, i], P[3, i], P[4, i], P[5, i], P[6, i], P[7, i],
                        P[8, i], P[9, i], P[10, i], P[11, i], P[12, i], P[13, i], P[14, i], phi)
                    dE, dI = gating_drift(se[i], si[i], rE, rI, P[15, i], P[16, i], P[17, i])
                    x = se[i] + dt * dE + amp[i] * nE[i]
                    y = si[i] + dt * dI + amp[i] * nI[i]
                    se[i] = min(max(x, zero), one)
                    si[i] = min(max(y, zero), one)
                    rb[i] = rE
                for i in range(N):
                    ac[i] += se[i]
                    blk_r[i] += rb[i]
                    blk_e[i] += se[i]
                    blk_i[i] += si[i]
                block_end = (step + 1) % k_h == 0
                if block_end or t == n_steps - 1:
                    if step // k_h + 1 > m_burn:  # the whole block lies after the burn-in
                        for i in range(N):
                            sr[i] += blk_r[i]
                            sse[i] += blk_e[i]
                            ssi[i] += blk_i[i]
                    blk_r[:] = zero
                    blk_e[:] = zero
                    blk_i[:] = zero
                if bold_on and block_end:
                    m = (step + 1) // k_h
                    for i in range(N):
                        h32[0, i] = s_[i]
                        h32[1, i] = f_[i]
                        h32[2, i] = v_[i]
                        h32[3, i] = q_[i]
                    for i in range(N):
                        ds, df, dv, dq = bw_derivatives(
                            h32[0, i], h32[1, i], h32[2, i], h32[3, i], ac[i] * inv_kh, kappa, gam_h, inv_tau,
                            inv_alpha, l1r, inv_rho, one, exp, log)
                        s_[i] += dt_h * ds
                        f_[i] += dt_h * df
                        v_[i] += dt_h * dv
                        q_[i] += dt_h * dq
                        ac[i] = zero
                    if m % k_tr == 0 and m > m_burn:
                        for i in range(N):
                            bold_out[b, o, i] = bold_signal(v_[i], q_[i], V0, k1, k2, k3, one)
                        o += 1
            SE[b] = se
            SI[b] = si
            hs[b] = s_
            hf[b] = f_
            hv[b] = v_
            hq[b] = q_
            acc[b] = ac
            sum_rE[b] = sr
            sum_SE[b] = sse
            sum_SI[b] = ssi

    return kernel


def _make_tiled_rww_kernel(BT, R, phi, exp, log, halves, box_muller, fastmath, uniform):
    """The fused loop over tiles of ``BT`` batch elements sharing a connectome.

    State is held lane-major, ``x[i * BT + l]`` for region ``i`` and lane ``l``, so the network
    input of the whole tile is one register-blocked product ``C @ X`` (``X`` of shape ``(N, BT)``)
    in which every ``C_ij`` is loaded once for ``BT`` batch elements, and the element-wise loops
    run over ``N * BT`` contiguous values. Lanes are padded with copies of a real element (their
    results are dropped); each lane draws its own counter-based noise from its own key, so a
    result depends neither on the tiling nor on the position in the batch.

    ``uniform`` (one bool per row of ``PAR``) marks the parameters that hold one value for the
    whole batch: the loop takes those as scalars (``PS``), which saves their loads; the others are
    read per value.

    Every variant computes each lane with the same operations in the same order, so a batch
    element's results do not depend on the variant, hence not on its batch: the network input is
    the sum over ``j`` in increasing order with fused multiply–adds (:func:`lane_matmul`; for a
    tile of one lane its per-element twin :func:`column_matvec` on the transposed connectome), and
    the float32 fast-maths flags (``fastmath``, a tuple of LLVM flags) exclude reassociation and
    reciprocal approximation, which would let the compiler evaluate a lane differently depending on
    the vector width or on which parameters are hoisted as uniform. Hoisting a model constant
    (as opposed to reading it per lane) can still change float32 results in the last bit (the
    compiler's contraction choices differ), so a constant at its default is hoisted in every
    batch, and the parameters a search varies (:data:`SEARCHED`) in none.
    """
    matmul = lane_matmul(BT, R)
    fm = set(fastmath) if isinstance(fastmath, tuple) else fastmath
    (U0, U1, U2, U3, U4, U5, U6, U7, U8, U9, U10, U11, U12, U13, U14, U15, U16, U17) = uniform

    @njit(parallel=True, fastmath=fm, error_model="numpy", nogil=True)
    def kernel(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, tile_subj, tile_src, tile_real, PAR,
               PS, keys, step0, n_steps, dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out):
        B, N = SE.shape
        NP = PAR.shape[1]
        M = N * BT
        kappa, gam_h, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = coef
        zero = one - one
        sqdt = np.sqrt(dt)
        ft = SE.dtype
        for t in prange(tile_src.shape[0]):
            src = tile_src[t]
            real = tile_real[t]
            C = CS[tile_subj[t]]
            CT = np.ascontiguousarray(C.T)  # for the one-lane product
            key = np.empty(M, dtype=np.uint64)  # the noise key of each lane, per value
            ctr = np.empty(M, dtype=np.uint64)  # and the counter offset i * GOLDEN
            se = np.empty(M, dtype=ft)
            si = np.empty(M, dtype=ft)
            s_ = np.empty(M, dtype=np.float64)  # the hemodynamic state: float64 (hemodynamics, precision)
            f_ = np.empty(M, dtype=np.float64)
            v_ = np.empty(M, dtype=np.float64)
            q_ = np.empty(M, dtype=np.float64)
            h32 = np.empty((4, M), dtype=ft)  # the state rounded to the simulation's dtype
            ac = np.empty(M, dtype=ft)
            sr = np.empty(M, dtype=np.float64)
            sse = np.empty(M, dtype=np.float64)
            ssi = np.empty(M, dtype=np.float64)
            P = np.empty((NP, M), dtype=ft)
            for l in range(BT):
                b = src[l]
                for i in range(N):
                    k = i * BT + l
                    key[k] = keys[b]
                    ctr[k] = np.uint64(i) * GOLDEN
                    se[k] = SE[b, i]
                    si[k] = SI[b, i]
                    s_[k] = hs[b, i]
                    f_[k] = hf[b, i]
                    v_[k] = hv[b, i]
                    q_[k] = hq[b, i]
                    ac[k] = acc[b, i]
                    sr[k] = sum_rE[b, i]
                    sse[k] = sum_SE[b, i]
                    ssi[k] = sum_SI[b, i]
                    for p in range(NP):
                        P[p, k] = PAR[b, p, i]
            c = np.empty(M, dtype=ft)
            nE = np.empty(M, dtype=ft)
            nI = np.empty(M, dtype=ft)
            blk_r = np.zeros(M, dtype=ft)  # block sums, flushed into the float64 sums once per
            blk_e = np.zeros(M, dtype=ft)  # hemodynamic step (a conditional float64 accumulate
            blk_i = np.zeros(M, dtype=ft)  # in the step loop blocks vectorisation)
            amp = P[1] * sqdt
            (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15, s16, s17) = (
                PS[0], PS[1], PS[2], PS[3], PS[4], PS[5], PS[6], PS[7], PS[8], PS[9], PS[10], PS[11], PS[12],
                PS[13], PS[14], PS[15], PS[16], PS[17])
            amp_s = s1 * sqdt
            X = se.reshape((N, BT))
            CX = c.reshape((N, BT))
            o = 0
            for t_ in range(n_steps):
                step = step0 + t_
                if BT == 1:  # c_i = sum_j C_ij S_E,j for every lane
                    column_matvec(CT, se, c)
                else:
                    matmul(C, X, CX)
                # LLVM gives up vectorising a loop that touches too many arrays, so the step
                # is split into short loops: noise, update, running sums
                # noise in two loops (the 64-bit hash and the float maths vectorise at different
                # widths); nE, nI first hold the two halves of the hash
                base = np.uint64(step * N) * GOLDEN
                for k in range(M):
                    nE[k], nI[k] = halves(fmix64((base + ctr[k]) ^ key[k]))
                for k in range(M):
                    nE[k], nI[k] = box_muller(nE[k], nI[k])
                for k in range(M):
                    _, _, rE, rI = currents_and_rates(
                        se[k], si[k], c[k], s0 if U0 else P[0, k], s2 if U2 else P[2, k],
                        s3 if U3 else P[3, k], s4 if U4 else P[4, k], s5 if U5 else P[5, k],
                        s6 if U6 else P[6, k], s7 if U7 else P[7, k], s8 if U8 else P[8, k],
                        s9 if U9 else P[9, k], s10 if U10 else P[10, k], s11 if U11 else P[11, k],
                        s12 if U12 else P[12, k], s13 if U13 else P[13, k], s14 if U14 else P[14, k], phi)
                    dE, dI = gating_drift(se[k], si[k], rE, rI, s15 if U15 else P[15, k], s16 if U16 else P[16, k],
                                          s17 if U17 else P[17, k])
                    a = amp_s if U1 else amp[k]
                    x = se[k] + dt * dE + a * nE[k]
                    y = si[k] + dt * dI + a * nI[k]
                    se[k] = min(max(x, zero), one)
                    si[k] = min(max(y, zero), one)
                    blk_r[k] += rE
                for k in range(M):
                    ac[k] += se[k]
                    blk_e[k] += se[k]
                    blk_i[k] += si[k]
                block_end = (step + 1) % k_h == 0
                if block_end or t_ == n_steps - 1:
                    if step // k_h + 1 > m_burn:  # the whole block lies after the burn-in
                        for k in range(M):
                            sr[k] += blk_r[k]
                            sse[k] += blk_e[k]
                            ssi[k] += blk_i[k]
                    blk_r[:] = zero
                    blk_e[:] = zero
                    blk_i[:] = zero
                if bold_on and block_end:
                    m = (step + 1) // k_h
                    for k in range(M):
                        h32[0, k] = s_[k]
                        h32[1, k] = f_[k]
                        h32[2, k] = v_[k]
                        h32[3, k] = q_[k]
                    for k in range(M):
                        ds, df, dv, dq = bw_derivatives(
                            h32[0, k], h32[1, k], h32[2, k], h32[3, k], ac[k] * inv_kh, kappa, gam_h, inv_tau,
                            inv_alpha, l1r, inv_rho, one, exp, log)
                        s_[k] += dt_h * ds
                        f_[k] += dt_h * df
                        v_[k] += dt_h * dv
                        q_[k] += dt_h * dq
                        ac[k] = zero
                    if m % k_tr == 0 and m > m_burn:
                        for l in range(BT):
                            if real[l]:
                                b = src[l]
                                for i in range(N):
                                    k = i * BT + l
                                    bold_out[b, o, i] = bold_signal(v_[k], q_[k], V0, k1, k2, k3, one)
                        o += 1
            for l in range(BT):
                if real[l]:
                    b = src[l]
                    for i in range(N):
                        k = i * BT + l
                        SE[b, i] = se[k]
                        SI[b, i] = si[k]
                        hs[b, i] = s_[k]
                        hf[b, i] = f_[k]
                        hv[b, i] = v_[k]
                        hq[b, i] = q_[k]
                        acc[b, i] = ac[k]
                        sum_rE[b, i] = sr[k]
                        sum_SE[b, i] = sse[k]
                        sum_SI[b, i] = ssi[k]

    return kernel


def make_tiles(subject_index, lanes: int):
    """Group the batch into tiles of ``lanes`` elements with one connectome each.

    Returns ``(tile_subj (T,), tile_src (T, lanes), tile_real (T, lanes))``: the connectome of each
    tile, the batch element in each lane (padding lanes repeat the tile's last element) and
    whether a lane is real (its results are written back).
    """
    subject_index = np.asarray(subject_index, dtype=np.int64)
    subj, src, real = [], [], []
    for s in np.unique(subject_index):
        idx = np.flatnonzero(subject_index == s)
        for a in range(0, len(idx), lanes):
            chunk = idx[a:a + lanes]
            subj.append(s)
            src.append(np.concatenate([chunk, np.repeat(chunk[-1:], lanes - len(chunk))]))
            real.append(np.arange(lanes) < len(chunk))
    return (np.asarray(subj, dtype=np.int64), np.asarray(src, dtype=np.int64).reshape(-1, lanes),
            np.asarray(real, dtype=np.bool_).reshape(-1, lanes))


_KERNELS = {}  # in-process memo: (dtype, lanes, uniform) or dtype -> dispatcher

# LLVM fast-maths flags of the float32 tiled kernels: no ``reassoc`` (reordered sums, e.g. a
# vectorised reduction), no ``arcp`` (x / y as x * (1/y), e.g. with y hoisted when uniform), no
# ``afn`` (approximate sqrt): each of those may evaluate a lane differently in different variants
TILED_FASTMATH32 = ("contract", "ninf", "nnan", "nsz")


def tiled_rww_kernel(dtype, lanes: int, uniform=(False,) * len(RWW_PARAM_ORDER)):
    """The compiled lane-tiled fused rWW kernel for ``dtype``, ``lanes`` batch elements per tile and
    the pattern ``uniform`` of batch-wide parameters (one compilation per pattern, then loaded from
    the on-disk cache in other processes: see the module docstring)."""
    key = (np.dtype(dtype).name, int(lanes), tuple(bool(u) for u in uniform))
    if key not in _KERNELS:
        if key[0] == "float32":
            args = dict(BT=key[1], R=4 if key[1] >= 16 else 8, phi=phi32, exp=exp32, log=log32,
                        halves=_halves32, box_muller=_box_muller32, fastmath=TILED_FASTMATH32, uniform=key[2])
        elif key[0] == "float64":
            args = dict(BT=key[1], R=4 if key[1] >= 8 else 8, phi=phi64, exp=_exp64, log=_log64,
                        halves=_halves64, box_muller=_box_muller64, fastmath=False, uniform=key[2])
        else:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        name = f"rww_tiled_{key[0]}_l{key[1]}_u{''.join('1' if u else '0' for u in key[2])}"
        _KERNELS[key] = build_kernel(_make_tiled_rww_kernel, name, args)
    return _KERNELS[key]


# measured single-core cost, ns per lane x region x step, of the tiled kernel by lanes per tile
# (N = 80, AMD Zen 4 with AVX-512; one lane: as the single-element kernel's 8.4 / 105, within noise)
_COST_NS = {"float32": {1: 8.4, 4: 6.3, 8: 4.6, 16: 4.4}, "float64": {1: 105.0, 4: 68.0, 8: 66.0}}


def choose_lanes(dtype, batch: int, subject_index=None, threads: int | None = None) -> int:
    """Lanes per tile of the tiled kernel for a batch, by a cost model: the wall time of a kernel is
    about ceil(tiles / threads) x (its width) x (its per-lane cost). Every width gives a batch
    element the same results bit for bit (see :func:`_make_tiled_rww_kernel`), so this choice
    changes the speed only. (The single-element kernel, ``lanes=0``, is never chosen: its
    vectorised network sum is ordered differently.)"""
    costs = _COST_NS[np.dtype(dtype).name]
    threads = threads or numba.get_num_threads()
    subj = np.zeros(batch, np.int64) if subject_index is None else np.asarray(subject_index)
    counts = np.unique(subj, return_counts=True)[1]
    best, best_t = 0, math.inf
    for w, c in costs.items():
        tiles = int(np.sum(-(-counts // w)))
        t = -(-tiles // threads) * w * c
        if t < best_t:
            best, best_t = w, t
    return best


def run_rww(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys, step0, n_steps,
            dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out, lanes=None):
    """Run the fused loop in place on the state arrays (``(B, N)`` each) and fill ``bold_out``
    ``(B, T, N)``: the tiled kernel with ``lanes`` per tile (default :func:`choose_lanes`; a batch
    element's results do not depend on it), or the single-element kernel for ``lanes=0`` (its
    float32 results differ from the tiled kernel's in the last bits)."""
    dtype = SE.dtype
    if lanes is None:
        lanes = choose_lanes(dtype, SE.shape[0], subject_index)
    if lanes == 0:
        kernel = rww_kernel(dtype)
        kernel(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys, step0, n_steps,
               dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out)
        return
    tile_subj, tile_src, tile_real = make_tiles(subject_index, lanes)
    PS = np.ascontiguousarray(PAR[0, :, 0])
    # the parameters searches vary are never hoisted (their batch-wide patterns would multiply the
    # compiled variants); model constants are, where uniform over the batch
    uniform = tuple(RWW_PARAM_ORDER[q] not in SEARCHED and bool(np.all(PAR[:, q, :] == PS[q]))
                    for q in range(PAR.shape[1]))
    kernel = tiled_rww_kernel(dtype, lanes, uniform)
    kernel(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, tile_subj, tile_src, tile_real, PAR, PS, keys,
           step0, n_steps, dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out)


def rww_kernel(dtype):
    """The compiled single-element fused rWW kernel for ``float32`` (fast maths) or ``float64`` (libm),
    cached on disk like :func:`tiled_rww_kernel`."""
    key = np.dtype(dtype).name
    if key not in _KERNELS:
        if key == "float32":
            args = dict(phi=phi32, exp=exp32, log=log32, halves=_halves32, box_muller=_box_muller32, fastmath=True)
        elif key == "float64":
            args = dict(phi=phi64, exp=_exp64, log=_log64, halves=_halves64, box_muller=_box_muller64, fastmath=False)
        else:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        _KERNELS[key] = build_kernel(_make_rww_kernel, f"rww_{key}", args)
    return _KERNELS[key]
