"""Vectorisable transcendental functions for the fused numba loops, in float32 and float64.

numba calls libm's scalar ``exp``/``log``/``sin`` inside loops, which stops LLVM from vectorising
the region loop (no SVML in the PyPI llvmlite). These replacements use only arithmetic,
``floor``, selects and integer/float bit casts, so a loop over regions compiles to AVX2/AVX-512
code. float32 (``exp32``, ``log32``, ``sincos_turns32``, ``phi32``): a few ulps (relative error
< 1e-6 on the ranges used). float64 (``exp64``, ``log64``, ``sincos_turns64``, ``phi64v``,
``box_muller64v``): within 1 ulp of the correctly rounded value (Cody–Waite reduction and fdlibm
polynomials, every step an explicit fused multiply–add, so a result does not depend on the
vector width or the caller's fast-maths flags). Tested against NumPy and long-double references
in ``tests/test_fastmath.py``. The tiled fused kernels use these; the float64 single-element
kernel keeps libm, as the CUDA code's host harness does.
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


# -- float64 -------------------------------------------------------------------------------------
# The same construction in double precision, for the fused float64 loop: arithmetic, ``floor``,
# float selects and integer/float bit casts only, so a loop over regions vectorises (four lanes
# with AVX2, eight with AVX-512). Every polynomial step is an explicit fused multiply–add
# (:func:`fma`, rounded once whatever the fast-maths flags of the loop they are inlined into), so a
# lane's result does not depend on the vector width or on contraction; no step relies on a rounding
# that ``reassoc`` could remove. Integer ↔ float conversions go through the exponent field of
# ``2^52`` (AVX2 has no packed int64 ↔ double conversion): for an integer ``0 <= j < 2^52``,
# ``bits(2^52) | j`` is the double ``2^52 + j``, and for an integer-valued ``|n| < 2^51`` the low
# mantissa bits of ``n + 1.5·2^52`` hold ``n``. Accuracy ≲ 1 ulp on the ranges used (tested against
# extended precision in ``tests/test_fastmath.py``).
_TWO52 = 4503599627370496.0  # 2^52
_ROUND52 = 6755399441055744.0  # 1.5 · 2^52: bits(n + _ROUND52) holds the integer n in its low bits
_BITS_TWO52 = np.int64(0x4330000000000000)  # bits of 2^52
_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits (k · _LN2_HI exact for |k| < 2^21; fdlibm)
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI


@intrinsic
def _bits_to_f64(typingctx, x):
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if x.bitwidth < 64:
            v = builder.zext(v, ir.IntType(64))
        return builder.bitcast(v, ir.DoubleType())

    return types.float64(x), codegen


@intrinsic
def _f64_to_bits(typingctx, x):
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@njit(error_model="numpy", inline="always")
def exp64(x):
    """``exp(x)`` for float64, ``x`` clamped to [-708, 709] (normal results only).

    Cody–Waite reduction ``x = n ln2 + r``, ``n = round(x / ln2)``, ``|r| <= ln2 / 2``, with ln 2 in
    two parts (``n · ln2_hi`` exact); ``e^r`` by its Taylor polynomial of degree 13 (truncation
    ``r^14 / 14! < 5e-18``); ``2^n`` put into the exponent field by bits. Relative error ≲ 1 ulp.
    """
    x = min(max(x, -708.0), 709.0)
    n = np.floor(x * 1.4426950408889634 + 0.5)
    r = fma(-n, _LN2_LO, fma(-n, _LN2_HI, x))
    p = 1.0 / 6227020800.0
    p = fma(p, r, 1.0 / 479001600.0)
    p = fma(p, r, 1.0 / 39916800.0)
    p = fma(p, r, 1.0 / 3628800.0)
    p = fma(p, r, 1.0 / 362880.0)
    p = fma(p, r, 1.0 / 40320.0)
    p = fma(p, r, 1.0 / 5040.0)
    p = fma(p, r, 1.0 / 720.0)
    p = fma(p, r, 1.0 / 120.0)
    p = fma(p, r, 1.0 / 24.0)
    p = fma(p, r, 1.0 / 6.0)
    p = fma(p, r, 0.5)
    p = fma(p, r, 1.0)
    p = fma(p, r, 1.0)
    # the low 12 bits of bits(n + 1.5·2^52) are n mod 4096; n + 1023 in [2, 2046] is the biased
    # exponent of 2^n (n is an integer before the sum, so no fast-maths rewrite can undo it)
    scale = _bits_to_f64((_f64_to_bits(n + _ROUND52) + np.int64(1023)) << np.int64(52))
    return p * scale


@njit(error_model="numpy", inline="always")
def log64(x):
    """``log(x)`` for positive normal float64: ``x = 2^k m`` with ``m`` in [√½, √2) by integer
    arithmetic on the bits (no selects), then with ``f = m - 1`` (exact), ``s = f / (2 + f)``,

        log(1 + f) = 2 atanh s = f - f²/2 + s (f²/2 + R(s²)),  R(z) ≈ Σ_j≥1 2 z^j / (2j + 1),  |s| <= 0.1716,

    evaluated as fdlibm's ``e_log.c`` does, with its minimax ``R`` (error < 2^-58.45), and
    ``log x = k ln2_hi - ((f²/2 - (s (f²/2 + R) + k ln2_lo)) - f)``. Error ≲ 1 ulp.
    """
    bits = _f64_to_bits(x)
    # shift so that the exponent field steps at √½ (0x3FE6A09E667F3BCD is the bits of √½)
    ix = bits + np.int64(0x3FF0000000000000 - 0x3FE6A09E667F3BCD)
    k = _bits_to_f64((ix >> np.int64(52)) | _BITS_TWO52) - (_TWO52 + 1023.0)
    m = _bits_to_f64((ix & np.int64(0x000FFFFFFFFFFFFF)) + np.int64(0x3FE6A09E667F3BCD))
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * fma(fma(w, 1.531383769920937332e-01, 2.222219843214978396e-01), w, 3.999999999940941908e-01)
    t2 = z * fma(fma(fma(w, 1.479819860511658591e-01, 1.818357216161805012e-01), w, 2.857142874366239149e-01),
                 w, 6.666666666666735130e-01)
    R = t2 + t1
    return k * _LN2_HI - ((hfsq - (s * (hfsq + R) + k * _LN2_LO)) - f)


@njit(error_model="numpy", inline="always")
def sincos_turns64(u):
    """``(sin 2πu, cos 2πu)`` for float64 ``u`` in [0, 1]: quadrant ``q = round(4u)``, ``r = 2π(u - q/4)``
    (``u - q/4`` exact), ``|r| <= π/4``, Taylor polynomials to degree 19 and 18 (truncation < 1e-20),
    then the rotation by ``q mod 4`` with exact arithmetic blends. Absolute error ≲ 2e-16."""
    q = np.floor(u * 4.0 + 0.5)
    r = (u - q * 0.25) * 6.283185307179586
    r2 = r * r
    s = -1.0 / 121645100408832000.0
    for k in (355687428096000.0, -1307674368000.0, 6227020800.0, -39916800.0, 362880.0, -5040.0, 120.0, -6.0):
        s = fma(s, r2, 1.0 / k)
    s = fma(s * r2, r, r)
    c = -1.0 / 6402373705728000.0
    for k in (20922789888000.0, -87178291200.0, 479001600.0, -3628800.0, 40320.0, -720.0, 24.0, -2.0, 1.0):
        c = fma(c, r2, 1.0 / k)
    qm = q - 4.0 * np.floor(q * 0.25)  # 0, 1, 2, 3
    half = np.floor(qm * 0.5)  # 1 for quadrants 2, 3
    odd = qm - 2.0 * half  # 1 for quadrants 1, 3
    sign = 1.0 - 2.0 * half
    even = 1.0 - odd
    # products with 0 or 1 and a sum with a zero are exact: the blend adds no rounding
    sin = sign * (s * even + c * odd)
    cos = sign * (c * even - s * odd)
    return sin, cos


@njit(error_model="numpy", inline="always")
def phi64v(z):
    """``z / (1 - exp(-z))`` for float64 with :func:`exp64`. For ``|z| < 0.5`` (where ``1 - e^-z``
    cancels) its series ``z/2 + (z/2) coth(z/2) = z/2 + Σ_k B_2k z^2k / (2k)!``
    ``= 1 + z/2 + z²/12 - z⁴/720 + z⁶/30240 - ...`` to ``z^18`` (radius 2π; truncation < 1e-19).
    Relative error ≲ 3e-16."""
    z2 = z * z
    series = 43867.0 / 5109094217170944000.0
    for c in (-3617.0 / 10670622842880000.0, 1.0 / 74724249600.0, -691.0 / 1307674368000.0, 1.0 / 47900160.0,
              -1.0 / 1209600.0, 1.0 / 30240.0, -1.0 / 720.0, 1.0 / 12.0):
        series = fma(series, z2, c)
    series = fma(series, z2, fma(0.5, z, 1.0))
    exact = z / (1.0 - exp64(-z))
    return series if abs(z) < 0.5 else exact


@njit(error_model="numpy", inline="always")
def halves64(z):
    """The high and low 32 bits of the uint64 hash ``z`` as float64, exactly (through ``2^52 + j``)."""
    hi = _bits_to_f64((z >> np.uint64(32)) | np.uint64(0x4330000000000000)) - _TWO52
    lo = _bits_to_f64((z & np.uint64(0xFFFFFFFF)) | np.uint64(0x4330000000000000)) - _TWO52
    return hi, lo


@njit(error_model="numpy", inline="always")
def box_muller64v(hi, lo):
    """Two standard normals from two 32-bit integers (as float64): ``u1 = (hi + ½) 2^-32`` in (0, 1),
    ``u2 = lo 2^-32``, ``r = √(-2 log u1)``, ``(r cos 2πu2, r sin 2πu2)`` (Box & Muller 1958)."""
    u1 = (hi + 0.5) * 2.0 ** -32
    u2 = lo * 2.0 ** -32
    r = np.sqrt(-2.0 * log64(u1))
    s, c = sincos_turns64(u2)
    return r * c, r * s
