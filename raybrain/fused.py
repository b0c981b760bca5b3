r"""The fused CPU path: a model's whole time loop with the Balloon–Windkessel model in one numba kernel.

One compiled loop per tile of batch elements (parallel over tiles with ``prange``) does the
network coupling, the counter-based noise, the Euler–Maruyama update with clipping, the
hemodynamics at their own step (or the sampling of a state variable), the TR sampling and the
running summaries, keeping the state in cache. The kernel is **generated from the model's
declaration** (:class:`raybrain.models.Model`: state variables and their clipping, coupled and noisy
variables, ``scalar_drift``, ``scalar_observables``, ``kernel_parameters``): :func:`kernel_source`
writes the loop as Python source for that model, inlining its own scalar drift with vectorisable
maths in float32 (:mod:`raybrain._fastmath`) or libm in float64, and the noise, the Balloon step and
the time loop are written once, here, for every model. Each path is held to the array reference
of :mod:`raybrain.integrate` by the tests on the same noise.

For state ``x`` (S variables), network input ``c_v = Σ_j C_ij x_v,j`` of each coupled variable,
noise amplitude ``σ`` and the pairs of normals of :mod:`raybrain.random` (noise variable ``j`` takes
normal ``j`` of the step's pairs ``q = 0, 1, …``, counter ``(t · n_pairs + q) N + i``):

.. math::

    x_{t+1} = \mathrm{clip}\left(x_t + f(x_t, c_t)\,\Delta t + \sigma \sqrt{\Delta t}\,\xi_t\right)

A kernel variant (:func:`variant`) is (model declaration, dtype, lanes per tile, batch-wide
parameters; for many-variable models a row stride instead: :class:`_Layout`). Compiling
one takes ~10–25 s, so the variants persist on disk across processes (every Ray worker would
otherwise pay it again): :mod:`raybrain._kernel_cache` writes each variant's generated module and
caches its compiled code, bit for bit the code compiled in-process. Where: ``$RAYBRAIN_CACHE_DIR``
(empty: off), else ``$XDG_CACHE_HOME/raybrain/kernels`` or ``~/.cache/raybrain/kernels``; stale
files (another source hash) are never read; the directory may be deleted at any time.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types as _pytypes
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from . import hemodynamics, random
from ._fastmath import (box_muller64v, column_matvec, exp32, exp64, halves64, lane_matmul, log32, log64,
                        phi32, phi64, phi64v, sincos_turns32)
from ._kernel_cache import build_kernel_source
from .kernel_call import KernelCall, make_tiles
from .random import GOLDEN

#: what the generated kernel modules import from here (helpers inlined into the loop)
__all__ = ["GOLDEN", "bold_signal", "box_muller64v", "bw_derivatives", "column_matvec", "exp32", "exp64", "fmix64",
           "halves64", "jit_scalar", "lane_matmul", "log32", "log64", "phi32", "phi64", "phi64v", "prange",
           "KernelCall", "choose_lanes", "get_kernel", "kernel_source", "make_tiles", "run", "uniform_parameters"]

# the shared equations, compiled for inlining into the loop (one source for every path)
_inline = njit(error_model="numpy", inline="always")
fmix64 = _inline(random.fmix64)
bw_derivatives = _inline(hemodynamics.bw_derivatives)
bold_signal = _inline(hemodynamics.bold_signal)

_S32 = np.uint64(32)
_LO32 = np.uint64(0xFFFFFFFF)

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



# -- the maths of each precision ------------------------------------------------------------------
#: what the generated kernels pass for each of a model's ``kernel_functions``, and the noise helpers
#: and Balloon maths they use, by kernel: vectorisable polynomials (:mod:`raybrain._fastmath`, float32
#: to a few ulp, float64 to 1 ulp) in the tiled kernels; libm in the float64 single-element kernel
#: (``lanes=0``), which the CUDA code's host harness (glibc) reproduces to rounding
MATHS = {
    ("float32", "tiled"): ({"exp": "exp32", "log": "log32", "phi": "phi32"},
                           ("_halves32", "_box_muller32", "exp32", "log32")),
    ("float64", "tiled"): ({"exp": "exp64", "log": "log64", "phi": "phi64v"},
                           ("halves64", "box_muller64v", "exp64", "log64")),
    ("float32", "single"): ({"exp": "exp32", "log": "log32", "phi": "phi32"},
                            ("_halves32", "_box_muller32", "exp32", "log32")),
    ("float64", "single"): ({"exp": "_exp64", "log": "_log64", "phi": "phi64"},
                            ("_halves64", "_box_muller64", "_exp64", "_log64")),
}
DTYPES = ("float32", "float64")

# LLVM fast-maths flags of the float32 tiled kernels: no ``reassoc`` (reordered sums, e.g. a
# vectorised reduction), no ``arcp`` (x / y as x * (1/y), e.g. with y hoisted when uniform), no
# ``afn`` (approximate sqrt): each of those may evaluate a lane differently in different variants
TILED_FASTMATH32 = ("contract", "ninf", "nnan", "nsz")

_JITTED = {}


def jit_scalar(fn, packed: tuple | None = None):
    """``fn`` (a plain scalar function, e.g. a model's ``scalar_drift``) compiled by numba for
    inlining, with the plain functions of its module that it calls compiled likewise: the model
    module stays free of numba, and its one definition runs on arrays and in the kernels.

    ``packed = (S, C, P)`` compiles a twin that takes its first ``S``, next ``C`` and next ``P``
    arguments as three tuples: Python compiles a call with more than 30 arguments (LaNMM's drift
    takes 50) as ``f(*args)``, which numba cannot inline."""
    key = (fn, packed)
    if key in _JITTED:
        return _JITTED[key]
    g = dict(fn.__globals__)
    for name in fn.__code__.co_names:
        v = g.get(name)
        if isinstance(v, _pytypes.FunctionType) and not hasattr(v, "py_func"):
            g[name] = jit_scalar(v)
    if packed is None:
        copy = _pytypes.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    else:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        fdef = tree.body[0]
        fdef.decorator_list = []
        names = [a.arg for a in fdef.args.args]
        groups, start = [], 0
        for size, tup in zip(packed, ("X_", "C_", "P_")):
            groups.append((names[start:start + size], tup))
            start += size
        fdef.args.args = [ast.arg(t) for _, t in groups] + [ast.arg(n) for n in names[start:]]
        fdef.args.defaults = []
        unpack = [ast.Assign(targets=[ast.Tuple([ast.Name(n, ast.Store()) for n in ns], ast.Store())],
                             value=ast.Name(t, ast.Load())) for ns, t in groups if ns]
        fdef.body = unpack + fdef.body
        ast.fix_missing_locations(tree)
        exec(compile(tree, inspect.getsourcefile(fn), "exec"), g)
        copy = g[fn.__name__]
    copy.__module__, copy.__qualname__ = fn.__module__, fn.__qualname__
    _JITTED[key] = njit(error_model="numpy", inline="always")(copy)
    return _JITTED[key]


# -- the declaration a kernel is generated from ---------------------------------------------------
@dataclass(frozen=True)
class Declaration:
    """What a fused kernel needs to know of a model (:meth:`of`); equal declarations share kernels."""

    name: str
    drift: tuple  #: (module, qualified name) of the scalar drift
    n_state: int
    coupled: tuple
    noise: tuple
    clips: tuple  #: per state variable, (low, high) or None
    bold_input: int
    n_params: int
    sigma: int  #: index of "sigma" among the kernel parameters
    observables: tuple  #: indices into the scalar observables of the summary observables
    n_observables: int
    functions: tuple

    @classmethod
    def of(cls, model) -> "Declaration":
        if not model.fused_path:
            raise ValueError(f"model {model.name!r} declares no scalar_drift: it has no fused path")
        fn = type(model).scalar_drift
        params = model.kernel_parameters
        if "sigma" not in params:
            raise ValueError(f"model {model.name!r}: a fused kernel needs a noise parameter named 'sigma'")
        return cls(model.name, (fn.__module__, fn.__qualname__), len(model.state_variables),
                   tuple(model.coupled_variables), tuple(model.noise_variables),
                   tuple(None if sv.clip is None else (float(sv.clip[0]), float(sv.clip[1]))
                         for sv in model.state_variables),
                   int(model.bold_input), len(params), params.index("sigma"),
                   tuple(model.scalar_observables.index(o) for o in model.summary_observables),
                   len(model.scalar_observables), tuple(model.kernel_functions))

    @property
    def n_pairs(self) -> int:
        return (len(self.noise) + 1) // 2

    @property
    def n_sums(self) -> int:
        return self.n_state + len(self.observables)


@dataclass(frozen=True)
class _Layout:
    """How a tiled kernel holds the state and block sums of its ``M = N · lanes`` elements: one
    array a variable (``x3[k]``), or, for models with many variables, one flat array whose rows
    have a compile-time stride ``RS`` (``XS[3 * RS + k]``, ``M ≤ RS``). A loop that writes many
    variables vectorises only if LLVM can rule out overlaps between them; with a run-time row
    length it needs a run-time check per pair of arrays and gives up beyond a handful, whereas a
    constant stride between rows of one array is a dependence distance it proves safe. ``RS`` is
    ``M`` rounded up to a power of two (at least 64) plus 16, so connectomes of similar size share a
    variant; the flat kernels also read the sampled variable's row at run time and hoist no
    parameter, which keeps the number of variants of a many-variable model down."""

    flat: bool

    #: the most arrays the update loop may write in the one-array-a-variable layout: beyond
    #: them, LLVM's run-time alias checks stop it vectorising (LaNMM's 22 state variables)
    MAX_ROWS = 6

    @classmethod
    def of(cls, d: "Declaration") -> "_Layout":
        return cls(flat=d.n_state + len(d.observables) > cls.MAX_ROWS)

    @staticmethod
    def row_stride(n_regions: int, lanes: int) -> int:
        # a power of two plus one 64-byte line: rows a power of two apart would map to the same
        # cache sets and evict each other
        return max(64, 1 << (int(n_regions) * int(lanes) - 1).bit_length()) + 16

    def x(self, s, k):
        return f"XS[{s} * RS + {k}]" if self.flat else f"x{s}[{k}]"

    def bold(self, d: "Declaration", k):
        """The sampled (hemodynamic input) variable: the run-time row ``bi`` in the flat layout."""
        return f"XS[bi * RS + {k}]" if self.flat else f"x{d.bold_input}[{k}]"

    def bk(self, r, k):
        return f"BK[{r} * RS + {k}]" if self.flat else f"bk{r}[{k}]"

    def bk_row(self, r):
        return f"BK[{r} * RS:{r} * RS + M]" if self.flat else f"bk{r}[:]"


def _drift_call(d: Declaration, lay: _Layout, maths: tuple, x: str, c: str, param) -> list[str]:
    """The lines computing the drift of one element: ``d0, …`` and the observables ``o0, …``."""
    outs = [f"d{s}" for s in range(d.n_state)] + [f"o{j}" for j in range(d.n_observables)]
    def tup(items):
        return "(" + ", ".join(items) + ",)"

    args = [tup(lay.x(s, x) for s in range(d.n_state)), tup(f"c{v}[{c}]" for v in range(len(d.coupled))),
            tup(param(q) for q in range(d.n_params)), "one", *(maths[0][f] for f in d.functions)]
    return [f"({', '.join(outs)},) = drift({', '.join(args)})"]


def _const(dtype: str, v: float) -> str:
    return {0.0: "zero", 1.0: "one"}.get(v, f"np.{dtype}({v!r})")


def _update(d: Declaration, lay: _Layout, dtype: str, k: str, amp: str) -> list[str]:
    """The Euler–Maruyama update of every state variable of element ``k`` (after the drift)."""
    lines = [f"a = {amp}"] if d.noise else []
    for s in range(d.n_state):
        e = f"{lay.x(s, k)} + dt * d{s}"
        if s in d.noise:
            e += f" + a * n{d.noise.index(s)}[{k}]"
        lines.append(f"y{s} = {e}")
    for s in range(d.n_state):
        clip = d.clips[s]
        lines.append(f"{lay.x(s, k)} = min(max(y{s}, {_const(dtype, clip[0])}), {_const(dtype, clip[1])})" if clip
                     else f"{lay.x(s, k)} = y{s}")
    for r, j in enumerate(d.observables):
        lines.append(f"{lay.bk(d.n_state + r, k)} += o{j}")
    return lines


def _indent(lines, n):
    return [" " * n + ln if ln else ln for ln in lines]


def _time_loop(d: Declaration, lay: _Layout, dtype: str, maths: tuple, M: str, coupling: list[str], param,
               amp: str, bold_write) -> list[str]:
    """The body of the loop over steps, written once for both layouts (element index ``k``)."""
    halves, box_muller, _, _ = maths[1]
    L = ["step = step0 + t_", *coupling]
    for q in range(d.n_pairs):
        a, b = f"n{2 * q}", f"n{2 * q + 1}"
        L += [f"base = np.uint64((step * {d.n_pairs} + {q}) * N) * GOLDEN",
              # the hash halves first, then Box–Muller: the two vectorise at different widths
              f"for k in range({M}):",
              f"    {a}[k], {b}[k] = {halves}(fmix64((base + ctr[k]) ^ key[k]))",
              f"for k in range({M}):",
              f"    {a}[k], {b}[k] = {box_muller}({a}[k], {b}[k])"]
    # LLVM gives up vectorising a loop that touches too many arrays: update, then running sums
    step = _drift_call(d, lay, maths, "k", "k", param) + _update(d, lay, dtype, "k", amp)
    L += [f"for k in range({M}):", *_indent(step, 4)]
    L += [f"for k in range({M}):", f"    ac[k] += {lay.bold(d, 'k')}"]
    L += [f"    {lay.bk(s, 'k')} += {lay.x(s, 'k')}" for s in range(d.n_state)]
    L += ["block_end = (step + 1) % k_h == 0",
          "if block_end or t_ == n_steps - 1:",
          "    if step // k_h + 1 > m_burn:  # the whole block lies after the burn-in",
          f"        for k in range({M}):",
          *[f"            sm{r}[k] += {lay.bk(r, 'k')}" for r in range(d.n_sums)],
          *[f"    {lay.bk_row(r)} = zero" for r in range(d.n_sums)],
          "if block_end:",
          "    m = (step + 1) // k_h",
          "    if bold_on:",
          f"        for k in range({M}):",
          "            h32[0, k] = s_[k]",
          "            h32[1, k] = f_[k]",
          "            h32[2, k] = v_[k]",
          "            h32[3, k] = q_[k]",
          f"        for k in range({M}):",
          "            ds, df, dv, dq = bw_derivatives(",
          "                h32[0, k], h32[1, k], h32[2, k], h32[3, k], ac[k] * inv_kh, kappa, gam_h, inv_tau,",
          "                inv_alpha, l1r, inv_rho, one, exp, log)",
          "            s_[k] += dt_h * ds",
          "            f_[k] += dt_h * df",
          "            v_[k] += dt_h * dv",
          "            q_[k] += dt_h * dq",
          "            ac[k] = zero",
          "    if m % k_tr == 0 and m > m_burn:",
          *_indent(bold_write, 8),
          "        o += 1"]
    return L


def _prologue(maths):
    halves, box_muller, exp, log = maths[1]
    return [f"exp = {exp}", f"log = {log}"]


def _tiled_kernel(d: Declaration, dtype: str, BT: int, RS: int | None, uniform: tuple) -> list[str]:
    """The fused loop over tiles of ``BT`` batch elements sharing a connectome.

    State is held lane-major, ``x[i * BT + l]`` for region ``i`` and lane ``l``, so the network
    input of the whole tile is one register-blocked product ``C @ X`` (``X`` of shape ``(N, BT)``)
    in which every ``C_ij`` is loaded once for ``BT`` batch elements, and the element-wise loops
    run over ``N * BT`` contiguous values. Lanes are padded with copies of a real element (their
    results are dropped); each lane draws its own counter-based noise from its own key, so a
    result depends neither on the tiling nor on the position in the batch.

    ``uniform`` (one bool per kernel parameter) marks the parameters that hold one value for the
    whole batch: the loop takes those as scalars (``PS``), which saves their loads; the others are
    read per value. Every variant computes each lane with the same operations in the same order,
    so a batch element's results do not depend on the variant, hence not on its batch: the
    network input is the sum over ``j`` in increasing order with fused multiply–adds
    (:func:`~raybrain._fastmath.lane_matmul`; for a tile of one lane its per-element twin
    :func:`~raybrain._fastmath.column_matvec` on the transposed connectome), and the float32
    fast-maths flags (:data:`TILED_FASTMATH32`) exclude reassociation and reciprocal
    approximation. Hoisting a model constant can still change float32 results in the last bit
    (the compiler's contraction choices differ), so a constant at its default is hoisted in every
    batch, and the model's ``searched_parameters`` in none.
    """
    S, CV = d.n_state, d.coupled
    lay = _Layout.of(d)
    fm = "{" + ", ".join(repr(f) for f in TILED_FASTMATH32) + "}" if dtype == "float32" else "False"

    def param(q):
        return f"s{q}" if uniform[q] else f"P[{q}, k]"

    if BT == 1:
        coupling = [f"column_matvec(CT, x{v}, c{i})" for i, v in enumerate(CV)]
    else:
        coupling = [f"matmul(C, X{i}, CX{i})" for i in range(len(CV))]
    bold_write = ["for l in range(BT):", "    if real[l]:", "        b = src[l]", "        for i in range(N):",
                  "            k = i * BT + l",
                  "            if bold_on:",
                  "                bold_out[b, o, i] = bold_signal(v_[k], q_[k], V0, k1, k2, k3, one)",
                  "            else:",
                  f"                bold_out[b, o, i] = {lay.bold(d, 'k')}"]
    amp = f"s{d.sigma} * sqdt" if uniform[d.sigma] else "amp[k]"
    body = [
        f"BT = {BT}",
        *([f"RS = {RS}  # the compile-time row stride of the flat layout (_Layout)"] if lay.flat else []),
        f"matmul = lane_matmul(BT, {4 if (BT >= 16 or (dtype == 'float64' and BT >= 8)) else 8})",
        "",
        "",
        f"@njit(parallel=True, fastmath={fm}, error_model='numpy', nogil=True)",
        "def kernel(X, H, acc, SUMS, CS, tile_subj, tile_src, tile_real, PAR, PS, keys, step0, n_steps, dt, k_h,",
        "           inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out, bi):",
        "    _, B, N = X.shape",
        "    M = N * BT",
        "    NP = PAR.shape[1]",
        "    kappa, gam_h, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = coef",
        "    zero = one - one",
        "    sqdt = np.sqrt(dt)",
        "    ft = X.dtype",
        "    for t in prange(tile_src.shape[0]):",
        "        src = tile_src[t]",
        "        real = tile_real[t]",
        "        C = CS[tile_subj[t]]",
        "        CT = np.ascontiguousarray(C.T)  # for the one-lane product",
        "        key = np.empty(M, dtype=np.uint64)  # the noise key of each lane, per value",
        "        ctr = np.empty(M, dtype=np.uint64)  # and the counter offset i * GOLDEN",
        *([f"        XS = np.empty({S} * RS, dtype=ft)  # the state, flat (see _Layout)"] if lay.flat
          else [f"        x{s} = np.empty(M, dtype=ft)" for s in range(S)]),
        "        s_ = np.empty(M, dtype=np.float64)  # the hemodynamic state: float64 (hemodynamics, precision)",
        "        f_ = np.empty(M, dtype=np.float64)",
        "        v_ = np.empty(M, dtype=np.float64)",
        "        q_ = np.empty(M, dtype=np.float64)",
        "        h32 = np.empty((4, M), dtype=ft)  # the hemodynamic state rounded to the simulation's dtype",
        "        ac = np.empty(M, dtype=ft)",
        *[f"        sm{r} = np.empty(M, dtype=np.float64)" for r in range(d.n_sums)],
        "        P = np.empty((NP, M), dtype=ft)",
        "        for l in range(BT):",
        "            b = src[l]",
        "            for i in range(N):",
        "                k = i * BT + l",
        "                key[k] = keys[b]",
        "                ctr[k] = np.uint64(i) * GOLDEN",
        *[f"                {lay.x(s, 'k')} = X[{s}, b, i]" for s in range(S)],
        "                s_[k] = H[0, b, i]",
        "                f_[k] = H[1, b, i]",
        "                v_[k] = H[2, b, i]",
        "                q_[k] = H[3, b, i]",
        "                ac[k] = acc[b, i]",
        *[f"                sm{r}[k] = SUMS[{r}, b, i]" for r in range(d.n_sums)],
        "                for p in range(NP):",
        "                    P[p, k] = PAR[b, p, i]",
        *[f"        c{i} = np.empty(M, dtype=ft)" for i in range(len(CV))],
        *[f"        n{j} = np.empty(M, dtype=ft)" for j in range(2 * d.n_pairs)],
        # block sums in the simulation's dtype, flushed into the float64 sums once per hemodynamic
        # step (a conditional float64 accumulate in the step loop blocks vectorisation)
        *([f"        BK = np.zeros({d.n_sums} * RS, dtype=ft)"] if lay.flat
          else [f"        bk{r} = np.zeros(M, dtype=ft)" for r in range(d.n_sums)]),
        f"        amp = P[{d.sigma}] * sqdt",
        *[f"        s{q} = PS[{q}]" for q in range(d.n_params) if uniform[q]],
        *[f"        x{v} = XS[{v} * RS:{v} * RS + M]  # the coupled variables, as rows for the network input"
          for v in (CV if lay.flat else ())],
        *([f"        X{i} = x{v}.reshape((N, BT))" for i, v in enumerate(CV)] if BT > 1 else []),
        *([f"        CX{i} = c{i}.reshape((N, BT))" for i in range(len(CV))] if BT > 1 else []),
        "        o = 0",
        "        for t_ in range(n_steps):",
        *_indent(_time_loop(d, lay, dtype, MATHS[dtype, "tiled"], "M", coupling, param, amp, bold_write), 12),
        "        for l in range(BT):",
        "            if real[l]:",
        "                b = src[l]",
        "                for i in range(N):",
        "                    k = i * BT + l",
        *[f"                    X[{s}, b, i] = {lay.x(s, 'k')}" for s in range(S)],
        "                    H[0, b, i] = s_[k]",
        "                    H[1, b, i] = f_[k]",
        "                    H[2, b, i] = v_[k]",
        "                    H[3, b, i] = q_[k]",
        "                    if bold_on:",
        "                        acc[b, i] = ac[k]",
        *[f"                    SUMS[{r}, b, i] = sm{r}[k]" for r in range(d.n_sums)],
    ]
    return body


def _single_kernel(d: Declaration, dtype: str) -> list[str]:
    """The fused loop for one batch element per ``prange`` iteration (``lanes=0`` only: its network
    sum runs four rows at a time, vectorised over ``j`` in float32 and unfused in float64, so its
    results differ in the last bits from the tiled kernel's, which the default path uses)."""
    S, CV = d.n_state, d.coupled
    fm = "True" if dtype == "float32" else "False"
    coupling = []
    for i, v in enumerate(CV):  # c_i = sum_j C_ij x_j, four rows at a time
        coupling += ["for i in range(0, N - 3, 4):", "    a0 = zero", "    a1 = zero", "    a2 = zero", "    a3 = zero",
                     "    r0 = C[i]", "    r1 = C[i + 1]", "    r2 = C[i + 2]", "    r3 = C[i + 3]",
                     "    for j in range(N):", f"        sj = x{v}[j]", "        a0 += r0[j] * sj",
                     "        a1 += r1[j] * sj", "        a2 += r2[j] * sj", "        a3 += r3[j] * sj",
                     f"    c{i}[i] = a0", f"    c{i}[i + 1] = a1", f"    c{i}[i + 2] = a2", f"    c{i}[i + 3] = a3",
                     "for i in range(N - N % 4, N):", "    a0 = zero", "    for j in range(N):",
                     f"        a0 += C[i, j] * x{v}[j]", f"    c{i}[i] = a0"]
    bold_write = ["for i in range(N):",
                  "    if bold_on:",
                  "        bold_out[b, o, i] = bold_signal(v_[i], q_[i], V0, k1, k2, k3, one)",
                  "    else:",
                  f"        bold_out[b, o, i] = x{d.bold_input}[i]"]
    loop = _time_loop(d, _Layout(flat=False), dtype, MATHS[dtype, "single"], "N", coupling, lambda q: f"P[{q}, k]",
                      "amp[k]", bold_write)
    return [
        "",
        f"@njit(parallel=True, fastmath={fm}, error_model='numpy', nogil=True)",
        "def kernel(X, H, acc, SUMS, CS, subj, PAR, keys, step0, n_steps, dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef,",
        "           bold_on, bold_out, bi):",
        "    _, B, N = X.shape",
        "    kappa, gam_h, inv_tau, inv_alpha, l1r, inv_rho, V0, k1, k2, k3, one = coef",
        "    zero = one - one",
        "    sqdt = np.sqrt(dt)",
        "    ft = X.dtype",
        "    for b in prange(B):",
        "        kb = keys[b]",
        "        key = np.full(N, kb, dtype=np.uint64)",
        "        ctr = np.arange(N).astype(np.uint64) * GOLDEN",
        *[f"        x{s} = X[{s}, b].copy()" for s in range(S)],
        "        s_ = H[0, b].copy()  # the hemodynamic state: float64 (hemodynamics, precision)",
        "        f_ = H[1, b].copy()",
        "        v_ = H[2, b].copy()",
        "        q_ = H[3, b].copy()",
        "        ac = acc[b].copy()",
        *[f"        sm{r} = SUMS[{r}, b].copy()" for r in range(d.n_sums)],
        *[f"        c{i} = np.empty(N, dtype=ft)" for i in range(len(CV))],
        *[f"        n{j} = np.empty(N, dtype=ft)" for j in range(2 * d.n_pairs)],
        "        h32 = np.empty((4, N), dtype=ft)",
        *[f"        bk{r} = np.zeros(N, dtype=ft)" for r in range(d.n_sums)],
        "        P = PAR[b]",
        "        C = CS[subj[b]]",
        f"        amp = P[{d.sigma}] * sqdt",
        "        o = 0",
        "        for t_ in range(n_steps):",
        *_indent(loop, 12),
        *[f"        X[{s}, b] = x{s}" for s in range(S)],
        "        H[0, b] = s_",
        "        H[1, b] = f_",
        "        H[2, b] = v_",
        "        H[3, b] = q_",
        "        if bold_on:",
        "            acc[b] = ac",
        *[f"        SUMS[{r}, b] = sm{r}" for r in range(d.n_sums)],
    ]


def variant(model, dtype, lanes: int, uniform=None, n_regions: int | None = None) -> tuple:
    """The kernel variant of ``model`` for ``dtype``, ``lanes`` batch elements per tile (0: the
    single-element kernel), the batch-wide parameters ``uniform`` (one bool per kernel parameter)
    and ``n_regions``: ``(declaration, dtype, lanes, uniform, row stride)``, reduced to what the
    generated source depends on (:class:`_Layout`: a flat kernel hoists no parameter, reads the
    sampled variable at run time and depends on ``n_regions`` only through its row stride)."""
    d = model if isinstance(model, Declaration) else Declaration.of(model)
    dtype = np.dtype(dtype).name
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    none = (False,) * d.n_params
    if lanes == 0:
        return d, dtype, 0, none, None
    if _Layout.of(d).flat:
        if not n_regions:
            raise ValueError(f"the tiled kernel of {d.name!r} needs n_regions (its row stride)")
        return dataclasses.replace(d, bold_input=-1), dtype, int(lanes), none, _Layout.row_stride(n_regions, lanes)
    uniform = tuple(bool(u) for u in (uniform or none))
    if len(uniform) != d.n_params:
        raise ValueError(f"uniform has {len(uniform)} flags for {d.n_params} kernel parameters")
    return d, dtype, int(lanes), uniform, None


def kernel_source(model, dtype, lanes: int, uniform=None, n_regions: int | None = None) -> str:
    """The source of the module that defines the fused kernel variant (:func:`variant`).
    Deterministic."""
    d, dtype, lanes, uniform, RS = variant(model, dtype, lanes, uniform, n_regions)
    maths = MATHS[dtype, "single" if lanes == 0 else "tiled"]
    module, qualname = d.drift
    fns = sorted({maths[0][f] for f in d.functions} | set(maths[1]))
    head = [
        f"# The fused {'single-element' if lanes == 0 else 'tiled'} {dtype} kernel of model {d.name!r} "
        f"(raybrain.fused.kernel_source).",
        "import numpy as np",
        "from numba import njit, prange",
        "from raybrain.fused import (GOLDEN, bold_signal, bw_derivatives, column_matvec, fmix64, jit_scalar, "
        "lane_matmul,",
        f"                            {', '.join(fns)})",
        f"from {module} import {qualname} as _drift",
        "",
        f"drift = jit_scalar(_drift, packed=({d.n_state}, {len(d.coupled)}, {d.n_params}))",
        *_prologue(maths),
    ]
    body = _single_kernel(d, dtype) if lanes == 0 else _tiled_kernel(d, dtype, lanes, RS, uniform)
    return "\n".join(head + body) + "\n"


_KERNELS = {}  # in-process memo: variant -> dispatcher


def kernel_name(v: tuple) -> str:
    """The file-name stem of a kernel variant, e.g. ``rww_s2_b0_tiled_float32_l8_u000001111111111111``
    or ``lanmm_s22_tiled_float32_r1040_l8`` (flat layout, row stride 1040)."""
    d, dtype, lanes, uniform, RS = v
    if lanes == 0:
        return f"{d.name}_s{d.n_state}_b{d.bold_input}_single_{dtype}"
    if RS:
        return f"{d.name}_s{d.n_state}_tiled_{dtype}_r{RS}_l{lanes}"
    bits = "".join("1" if u else "0" for u in uniform)
    return f"{d.name}_s{d.n_state}_b{d.bold_input}_tiled_{dtype}_l{lanes}_u{bits}"


def get_kernel(model, dtype, lanes: int, uniform=None, n_regions: int | None = None):
    """The compiled kernel variant (from this process's memo, the on-disk cache, or compiled)."""
    v = variant(model, dtype, lanes, uniform, n_regions)
    if v not in _KERNELS:
        _KERNELS[v] = build_kernel_source(kernel_name(v), kernel_source(*v[:2], v[2], v[3], n_regions))
    return _KERNELS[v]


# measured single-core cost of rWW, ns per lane x region x step, of the tiled kernel by lanes per
# tile (N = 80, AMD Zen 4 with AVX-512; float64 with the polynomial maths of raybrain._fastmath);
# the ratios between widths, which is all the choice uses, hold for the other models too
_COST_NS = {"float32": {1: 8.4, 4: 6.3, 8: 4.6, 16: 4.4}, "float64": {1: 17.3, 4: 11.6, 8: 11.0, 16: 11.2}}


def choose_lanes(dtype, batch: int, subject_index=None, threads: int | None = None) -> int:
    """Lanes per tile of the tiled kernel for a batch, by a cost model: the wall time of a kernel is
    about ceil(tiles / threads) x (its width) x (its per-lane cost). Every width gives a batch
    element the same results bit for bit (see :func:`_tiled_kernel`), so this choice changes the
    speed only. (The single-element kernel, ``lanes=0``, is never chosen: its vectorised network
    sum is ordered differently.)"""
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


def uniform_parameters(model, PAR) -> tuple:
    """Per kernel parameter, whether the kernel takes it as one batch-wide value: a model constant
    equal over the whole batch (the model's ``searched_parameters`` never are, whatever the batch)."""
    names = model.kernel_parameters
    PS = PAR[0, :, 0]
    return tuple(names[q] not in model.searched_parameters and bool(np.all(PAR[:, q, :] == PS[q]))
                 for q in range(PAR.shape[1]))


def run(call: KernelCall, lanes: int | None = None) -> None:
    """Run the fused loop of ``call`` in place (NumPy arrays): the tiled kernel with ``lanes`` per
    tile (default :func:`choose_lanes`; a batch element's results do not depend on it), or the
    single-element kernel for ``lanes=0`` (its float32 results differ from the tiled kernel's in
    the last bits)."""
    c = call
    dtype = c.X.dtype
    if lanes is None:
        lanes = choose_lanes(dtype, c.X.shape[1], c.subject_index)
    plan = (c.step0, c.n_steps, c.dt, c.k_h, c.inv_kh, c.dt_h, c.k_tr, c.m_burn, c.coef, c.bold_on, c.bold_out)
    if lanes == 0:
        get_kernel(c.model, dtype, 0)(c.X, c.H, c.acc, c.sums, c.CS, c.subject_index, c.PAR, c.keys, *plan,
                                      c.model.bold_input)
        return
    tile_subj, tile_src, tile_real = make_tiles(c.subject_index, lanes)
    PS = np.ascontiguousarray(c.PAR[0, :, 0])
    kernel = get_kernel(c.model, dtype, lanes, uniform_parameters(c.model, c.PAR), c.X.shape[2])
    kernel(c.X, c.H, c.acc, c.sums, c.CS, tile_subj, tile_src, tile_real, c.PAR, PS, c.keys, *plan, c.model.bold_input)
