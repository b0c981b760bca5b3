"""Vectorisable float32 transcendental functions for the fused numba loop.

numba calls libm's scalar ``expf``/``logf``/``sinf`` inside loops, which stops LLVM from
vectorising the region loop (no SVML in the PyPI llvmlite). These replacements use only
arithmetic, ``floor``, selects and integer/float bit casts, so a loop over regions compiles to
AVX2/AVX-512 code. Accuracy is a few float32 ulps (relative error < 1e-6 on the ranges used;
tested against NumPy in ``tests/test_fastmath.py``). The float64 fused path keeps libm
(``np.exp`` etc.) so it agrees with the array reference to rounding.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_f32 = np.float32


@intrinsic
def _bits_to_f32(typingctx, x):
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if x.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def _f32_to_bits(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@njit(fastmath=True, error_model="numpy", inline="always")
def exp32(x):
    """``exp(x)`` for float32: Cody–Waite reduction ``x = n ln2 + r``, degree-7 polynomial, 2^n by bits."""
    x = min(max(x, _f32(-87.0)), _f32(88.0))
    n = np.floor(x * _f32(1.4426950408889634) + _f32(0.5))
    r = x - n * _f32(0.693145751953125) - n * _f32(1.428606765330187e-06)
    p = _f32(1.0) + r * (_f32(1.0) + r * (_f32(0.5) + r * (_f32(1.0 / 6.0) + r * (
        _f32(1.0 / 24.0) + r * (_f32(1.0 / 120.0) + r * (_f32(1.0 / 720.0) + r * _f32(1.0 / 5040.0)))))))
    scale = _bits_to_f32((np.int32(n) + np.int32(127)) << np.int32(23))
    return p * scale


@njit(fastmath=True, error_model="numpy", inline="always")
def log32(x):
    """``log(x)`` for positive normal float32: exponent by bits, atanh series on the mantissa."""
    bits = _f32_to_bits(x)
    e = _f32((bits >> np.int32(23)) - np.int32(127))
    m = _bits_to_f32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F800000))  # [1, 2)
    big = m > _f32(1.4142135623730951)
    m = _f32(0.5) * m if big else m
    e = e + _f32(1.0) if big else e
    s = (m - _f32(1.0)) / (m + _f32(1.0))  # |s| <= 0.1716
    s2 = s * s
    lm = _f32(2.0) * s * (_f32(1.0) + s2 * (_f32(1.0 / 3.0) + s2 * (_f32(0.2) + s2 * (_f32(1.0 / 7.0) + s2 * _f32(1.0 / 9.0)))))
    return e * _f32(0.6931471805599453) + lm


@njit(fastmath=True, error_model="numpy", inline="always")
def sincos_turns32(u):
    """``(sin 2πu, cos 2πu)`` for float32 ``u`` in [0, 1]: quadrant reduction + Taylor to degree 11/10."""
    q = np.floor(u * _f32(4.0) + _f32(0.5))
    r = (u - q * _f32(0.25)) * _f32(6.283185307179586)  # |r| <= π/4
    r2 = r * r
    s = r * (_f32(1.0) - r2 * (_f32(1.0 / 6.0) - r2 * (_f32(1.0 / 120.0) - r2 * (_f32(1.0 / 5040.0) - r2 * (
        _f32(1.0 / 362880.0) - r2 * _f32(1.0 / 39916800.0))))))
    c = _f32(1.0) - r2 * (_f32(0.5) - r2 * (_f32(1.0 / 24.0) - r2 * (_f32(1.0 / 720.0) - r2 * (
        _f32(1.0 / 40320.0) - r2 * _f32(1.0 / 3628800.0)))))
    # rotate by the quadrant q mod 4 with arithmetic only (selects on integers do not vectorise)
    qm = q - _f32(4.0) * np.floor(q * _f32(0.25))  # 0, 1, 2, 3
    half = np.floor(qm * _f32(0.5))  # 0 for quadrants 0, 1; 1 for 2, 3
    odd = qm - _f32(2.0) * half  # 1 for quadrants 1, 3
    sign = _f32(1.0) - _f32(2.0) * half
    sin = sign * (s + odd * (c - s))
    cos = sign * (c - odd * (c + s))
    return sin, cos


@njit(fastmath=True, error_model="numpy", inline="always")
def phi32(z):
    """``z / (1 - exp(-z))`` for float32; for ``|z| < 0.5`` its series
    ``1 + z/2 + z²/12 - z⁴/720 + z⁶/30240 - z⁸/1209600`` (truncation < 1e-10)."""
    z2 = z * z
    series = _f32(1.0) + _f32(0.5) * z + z2 * (_f32(1.0 / 12.0) - z2 * (_f32(1.0 / 720.0) - z2 * (
        _f32(1.0 / 30240.0) - z2 * _f32(1.0 / 1209600.0))))
    exact = z / (_f32(1.0) - exp32(-z))
    return series if abs(z) < _f32(0.5) else exact


@njit(error_model="numpy", inline="always")
def phi64(z):
    """``z / (1 - exp(-z))`` for float64 via libm ``expm1`` (the same guard as the array code)."""
    if abs(z) < 1e-6:
        return 1.0 + 0.5 * z + z * z / 12.0
    return z / (-np.expm1(-z))


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma``), in float32 or float64, whatever the fast-maths flags."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        ft = context.get_value_type(sig.return_type)
        suffix = "f32" if a == types.float32 else "f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ft, [ft, ft, ft]), f"llvm.fma.{suffix}")
        return builder.call(fn, list(args))

    return a(a, b, c), codegen


@njit(error_model="numpy", inline="always")
def column_matvec(CT, x, out):
    """``out = CT.T @ x`` for ``CT`` ``(K, M)`` (a matrix stored transposed), ``x`` ``(K,)``, ``out`` ``(M,)``:
    ``out_i = fma(CT[K-1, i], x_{K-1}, ... fma(CT[0, i], x_0, 0))``, the sum over ``j`` in increasing
    order with fused multiply–adds — per element exactly what :func:`lane_matmul` computes per lane,
    so a tile of one lane agrees bit for bit with wider tiles. The loop over ``i`` vectorises."""
    M = out.shape[0]
    for i in range(M):
        out[i] = 0
    for j in range(CT.shape[0]):
        xj = x[j]
        row = CT[j]
        for i in range(M):
            out[i] = fma(row[i], xj, out[i])


_LANE_MATMULS = {}


def lane_matmul(lanes: int, rows: int = 4):
    """An intrinsic ``lane_matmul(C, X, out)``: ``out = C @ X`` for C-contiguous 2-D float arrays
    ``C`` ``(M, K)``, ``X`` ``(K, lanes)`` and ``out`` ``(M, lanes)`` of the same float type.

    This is the network input of a tile of ``lanes`` batch elements that share a connectome (one
    element per column), register-blocked by hand because LLVM neither vectorises nor
    register-allocates the triple loop written in numba: ``rows`` rows of ``out`` are kept in
    ``<lanes x float>`` registers while ``j`` runs, each ``C_ij`` is loaded once, broadcast and used
    in one vector FMA, and each row ``X_j`` is loaded once per ``rows`` rows. The sum over ``j`` runs
    in increasing order with fused multiply–adds.
    """
    key = (int(lanes), int(rows))
    if key in _LANE_MATMULS:
        return _LANE_MATMULS[key]
    BT, R = key

    @intrinsic
    def _lane_matmul(typingctx, C, X, out):
        for a in (C, X, out):
            if not (isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
                    and a.dtype in (types.float32, types.float64) and a.dtype == C.dtype):
                return None

        def codegen(context, builder, sig, args):
            ft = context.get_value_type(sig.args[0].dtype)
            vt = ir.VectorType(ft, BT)
            vptr = vt.as_pointer()
            ca, xa, oa = [context.make_array(t)(context, builder, v) for t, v in zip(sig.args, args)]
            n = builder.extract_value(xa.shape, 0)  # K, the length of the sums
            m = builder.extract_value(oa.shape, 0)  # M, the rows of the result
            it = n.type

            def K(v):
                return ir.Constant(it, v)

            zero = ir.Constant(vt, None)
            mask = ir.Constant(ir.VectorType(ir.IntType(32), BT), [0] * BT)
            suffix = "f32" if isinstance(ft, ir.FloatType) else "f64"
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                                 f"llvm.fma.v{BT}{suffix}")

            def block(i0, nrows):
                accs = [cgutils.alloca_once(builder, vt) for _ in range(nrows)]  # promoted to registers
                for a in accs:
                    builder.store(zero, a)
                rowp = [builder.gep(ca.data, [builder.mul(builder.add(i0, K(r)), n)]) for r in range(nrows)]
                with cgutils.for_range(builder, n) as loop:
                    j = loop.index
                    xv = builder.load(builder.bitcast(builder.gep(xa.data, [builder.mul(j, K(BT))]), vptr), align=4)
                    for r in range(nrows):
                        cij = builder.load(builder.gep(rowp[r], [j]))
                        bc = builder.shuffle_vector(builder.insert_element(zero, cij, ir.Constant(ir.IntType(32), 0)),
                                                    zero, mask)
                        builder.store(builder.call(fma, [bc, xv, builder.load(accs[r])]), accs[r])
                for r in range(nrows):
                    p = builder.gep(oa.data, [builder.mul(builder.add(i0, K(r)), K(BT))])
                    builder.store(builder.load(accs[r]), builder.bitcast(p, vptr), align=4)

            mfull = builder.sub(m, builder.srem(m, K(R)))
            with cgutils.for_range_slice(builder, K(0), mfull, K(R)) as (i0, _):
                block(i0, R)
            with cgutils.for_range_slice(builder, mfull, m, K(1)) as (i0, _):
                block(i0, 1)
            return context.get_dummy_value()

        return types.none(C, X, out), codegen

    _LANE_MATMULS[key] = _lane_matmul
    return _lane_matmul
