"""A model's declaration as C++: the header the generic CUDA core (``model_core.cuh``) is compiled with.

:func:`model_header` writes, for one :class:`raybrain.models.Model`, the constants of its
declaration (state variables S, coupled variables C, kernel parameters P, summary observables O,
Box–Muller pairs, the rows of ``sigma``, the state fed to the hemodynamics) and four
``__host__ __device__`` functions of one region, templated on the precision ``T``:

* ``drift(x, c, p, one, dx, so)``: the model's :attr:`~raybrain.models.Model.scalar_drift`,
  translated from its Python syntax tree; ``dx`` the S derivatives, ``so`` the summary observables;
* ``coupled(x, c)``: the coupled state variables, in ``coupled_variables`` order;
* ``add_noise(x, xi, amp)``: ``x_v += amp ξ_j`` for the j-th noise variable v;
* ``clip(x)``: each state variable with a ``clip`` to its interval (NaN stays NaN).

The translation (:func:`translate_drift`) accepts exactly the language the declaration allows: a
pure scalar function without numeric literals, whose body is assignments (to a name or a tuple of
names, from a tuple too) and one final ``return``; expressions of names, ``+ - * /``, unary minus,
tuples, calls of the passed ``kernel_functions`` (``exp``, ``log``, ``phi`` become the core's
``rb_exp``, ``rb_log``, ``rb_phi`` of the precision) and calls of other plain functions of the
model's module, inlined (arguments bound to new constants). Every Python operation becomes one C
operation on the same operands in the same order (fully parenthesised), so with
``-ffp-contract=off`` the host build performs NumPy's operations in NumPy's order (the library's
``exp``/``log`` aside, which may differ in the last bit). Anything else raises
:class:`DeclarationError` naming the line.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
import types

#: the C functions of the core each kernel function name maps to (defined per precision there)
C_FUNCTIONS = {"exp": "rb_exp", "log": "rb_log", "phi": "rb_phi"}

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


class DeclarationError(ValueError):
    """A model's declaration has something the CUDA translation does not accept."""


class _Builtin:
    """A passed kernel function (``exp``, ``log``, ``phi``): a call becomes ``rb_<name>(x)``."""

    def __init__(self, c_name: str):
        self.c_name = c_name


class _Translator:
    """Inlines a scalar function and the plain functions it calls into C statements (SSA: every
    Python assignment binds a new ``const T`` local)."""

    def __init__(self):
        self.lines: list[str] = []
        self.used: set[str] = set()

    def fresh(self, hint: str) -> str:
        base = "v_" + "".join(ch if (ch.isascii() and ch.isalnum()) or ch == "_" else "_" for ch in hint)
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name

    def bind(self, hint: str, expr: str) -> str:
        """``expr`` as a named constant (a name stays a name)."""
        if expr.isidentifier():
            return expr
        name = self.fresh(hint)
        self.lines.append(f"const T {name} = {expr};")
        return name

    # -- functions ---------------------------------------------------------------------------
    def inline(self, fn, args: list, where: str):
        """Translate the body of ``fn`` with its parameters bound to ``args`` (C names, tuples or
        function values); returns the value of its ``return``."""
        if not isinstance(fn, types.FunctionType):
            raise DeclarationError(f"{where}: {fn!r} is not a plain Python function")
        tree = _function_ast(fn)
        params = [a.arg for a in tree.args.args]
        if tree.args.vararg or tree.args.kwarg or tree.args.kwonlyargs or tree.args.posonlyargs:
            raise DeclarationError(f"{fn.__qualname__}: only plain positional parameters are accepted")
        if len(args) != len(params):
            raise DeclarationError(f"{where}: {fn.__qualname__} takes {len(params)} arguments, got {len(args)} "
                                   "(pass every argument, functions included, explicitly)")
        env = dict(zip(params, args))
        body = list(tree.body)
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]  # the docstring
        for i, stmt in enumerate(body):
            at = f"{fn.__qualname__} (line {stmt.lineno - 1 + fn.__code__.co_firstlineno})"
            if isinstance(stmt, ast.Assign):
                if len(stmt.targets) != 1:
                    raise DeclarationError(f"{at}: chained assignment")
                self.assign(stmt.targets[0], self.expr(stmt.value, env, fn, at), env, at)
            elif isinstance(stmt, ast.Return) and i == len(body) - 1 and stmt.value is not None:
                return self.expr(stmt.value, env, fn, at)
            else:
                raise DeclarationError(f"{at}: {type(stmt).__name__} is not accepted in a scalar declaration "
                                       "(assignments and one final return only)")
        raise DeclarationError(f"{fn.__qualname__}: no final return")

    def assign(self, target, value, env: dict, at: str):
        if isinstance(target, ast.Name):
            env[target.id] = self.bind(target.id, value) if isinstance(value, str) else value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if not isinstance(value, tuple) or len(value) != len(target.elts):
                n = len(value) if isinstance(value, tuple) else 1
                raise DeclarationError(f"{at}: unpacking {n} values into {len(target.elts)} names")
            for t, v in zip(target.elts, value):
                self.assign(t, v, env, at)
        else:
            raise DeclarationError(f"{at}: only names and tuples of names may be assigned")

    # -- expressions -------------------------------------------------------------------------
    def expr(self, node, env: dict, fn, at: str):
        """A C expression (str), a tuple of values, or a function value."""
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            g = fn.__globals__.get(node.id)
            if isinstance(g, types.FunctionType):
                return g
            raise DeclarationError(f"{at}: name {node.id!r} is neither a parameter, a local nor a plain "
                                   "function of the module")
        if isinstance(node, ast.BinOp):
            a = self.scalar(node.left, env, fn, at)
            b = self.scalar(node.right, env, fn, at)
            if isinstance(node.op, ast.Div):
                return f"rb_div({a}, {b})"
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise DeclarationError(f"{at}: operator {type(node.op).__name__} is not accepted (+ - * / only)")
            return f"({a} {op} {b})"
        if isinstance(node, ast.UnaryOp):
            a = self.scalar(node.operand, env, fn, at)
            if isinstance(node.op, ast.USub):
                return f"(-{a})"
            if isinstance(node.op, ast.UAdd):
                return a
            raise DeclarationError(f"{at}: unary {type(node.op).__name__} is not accepted")
        if isinstance(node, ast.Tuple):
            return tuple(self.expr(e, env, fn, at) for e in node.elts)
        if isinstance(node, ast.Call):
            f = self.expr(node.func, env, fn, at)
            if node.keywords:
                raise DeclarationError(f"{at}: keyword arguments are not accepted")
            args = [self.expr(a, env, fn, at) for a in node.args]
            if isinstance(f, _Builtin):
                if len(args) != 1 or not isinstance(args[0], str):
                    raise DeclarationError(f"{at}: {f.c_name} takes one scalar")
                return f"{f.c_name}({args[0]})"
            if isinstance(f, types.FunctionType):
                name = getattr(node.func, "id", "f")
                bound = [self.bind(f"{name}_arg", a) if isinstance(a, str) else a for a in args]
                return self.inline(f, bound, at)
            raise DeclarationError(f"{at}: only functions can be called")
        if isinstance(node, ast.Constant):
            raise DeclarationError(f"{at}: numeric literal {node.value!r}: a scalar declaration holds no literal "
                                   "(use the argument `one`, e.g. `one + one` for 2)")
        raise DeclarationError(f"{at}: {type(node).__name__} is not accepted in a scalar declaration")

    def scalar(self, node, env, fn, at) -> str:
        v = self.expr(node, env, fn, at)
        if not isinstance(v, str):
            raise DeclarationError(f"{at}: a tuple or a function used as a number")
        return v


def _function_ast(fn) -> ast.FunctionDef:
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise DeclarationError(f"the source of {fn!r} is not available: {e}") from None
    tree = ast.parse(src)
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef):
        raise DeclarationError(f"{fn!r} is not defined by a def statement")
    return node


def _scalar_drift_function(model):
    fn = type(model).scalar_drift
    fn = getattr(fn, "__func__", fn)  # staticmethod
    if fn is None:
        raise DeclarationError(f"model {model.name!r} declares no scalar_drift: it has no fused path")
    return fn


def translate_drift(model) -> list[str]:
    """The statements of ``drift`` (see the module docstring) for ``model``: its inputs are the C
    arrays ``x[S]``, ``c[C]``, ``p[P]`` and the scalar ``one``; it writes ``dx[S]`` and ``so[O]``."""
    fn = _scalar_drift_function(model)
    t = _Translator()
    sv = [s.name for s in model.state_variables]
    cv = [sv[v] for v in model.coupled_variables]
    pars = list(model.kernel_parameters)
    unknown = [f for f in model.kernel_functions if f not in C_FUNCTIONS]
    if unknown:
        raise DeclarationError(f"model {model.name!r}: unknown kernel function {unknown[0]!r}; known: "
                               f"{sorted(C_FUNCTIONS)}")
    args: list = []
    for s, name in enumerate(sv):
        args.append(t.bind(name, f"x[{s}]"))
    for j, name in enumerate(cv):
        args.append(t.bind(f"c_{name}", f"c[{j}]"))
    for q, name in enumerate(pars):
        args.append(t.bind(name, f"p[{q}]"))
    args.append("one")
    t.used.add("one")
    args.extend(_Builtin(C_FUNCTIONS[f]) for f in model.kernel_functions)
    out = t.inline(fn, args, f"model {model.name!r}")
    S, n_obs = len(sv), len(model.scalar_observables)
    if not isinstance(out, tuple) or len(out) != S + n_obs or not all(isinstance(v, str) for v in out):
        n = len(out) if isinstance(out, tuple) else 1
        raise DeclarationError(f"model {model.name!r}: scalar_drift returns {n} values; the declaration says "
                               f"{S} derivatives + {n_obs} observables")
    lines = list(t.lines)
    lines += [f"dx[{s}] = {out[s]};  // d{sv[s]}/dt" for s in range(S)]
    for r, name in enumerate(model.summary_observables):
        lines.append(f"so[{r}] = {out[S + model.scalar_observables.index(name)]};  // {name}")
    return lines


def _literal(x: float) -> str:
    """``x`` as a C++ literal converted to ``T`` (``T(x)``: the float64 value rounded to T, as
    ``np.float32(x)`` does)."""
    return f"T({float(x).hex()})"


def declaration_key(model) -> tuple:
    """What the generated header depends on (equal keys, equal headers)."""
    fn = _scalar_drift_function(model)
    return (fn.__module__, fn.__qualname__, fn.__code__.co_code, tuple(sv.name for sv in model.state_variables),
            tuple(sv.clip for sv in model.state_variables), tuple(model.coupled_variables),
            tuple(model.noise_variables), int(model.bold_input), tuple(model.kernel_parameters),
            tuple(model.scalar_observables), tuple(model.summary_observables), tuple(model.kernel_functions))


_HEADERS: dict = {}  # declaration_key -> header text


def _header(model) -> str:
    sv = [s.name for s in model.state_variables]
    S, C, P = len(sv), len(model.coupled_variables), len(model.kernel_parameters)
    O = len(model.summary_observables)
    noise = tuple(model.noise_variables)
    pars = list(model.kernel_parameters)
    if noise and "sigma" not in pars:
        raise DeclarationError(f"model {model.name!r}: noise needs a parameter named 'sigma'")
    if P > 64:
        raise DeclarationError(f"model {model.name!r}: at most 64 kernel parameters (the uniform mask), got {P}")
    if not model.coupled_variables:
        raise DeclarationError(f"model {model.name!r}: the CUDA core needs at least one coupled variable")
    fn = _scalar_drift_function(model)
    drift = translate_drift(model)
    ind = "    "
    L = [f"// generated by raybrain.cuda.codegen from {fn.__module__}.{fn.__qualname__} ({type(model).__name__}):",
         "// the model's declaration for model_core.cuh. Do not edit: it is written from the Python.",
         "namespace rb {",
         "namespace model {",
         "",
         f"constexpr int S = {S};  // state variables: {', '.join(sv)}",
         f"constexpr int C = {C};  // coupled variables: {', '.join(sv[v] for v in model.coupled_variables)}",
         f"constexpr int P = {P};  // kernel parameters: {', '.join(pars)}",
         f"constexpr int O = {O};  // summary observables: {', '.join(model.summary_observables) or '-'}",
         f"constexpr int O_ARR = {max(O, 1)};  // O, at least 1 (no zero-length arrays)",
         f"constexpr int N_PAIRS = {(len(noise) + 1) // 2};  // Box-Muller pairs per region and step",
         f"constexpr int XI = {max(2 * ((len(noise) + 1) // 2), 2)};  // normals per region and step, at least 2",
         f"constexpr int SIGMA = {pars.index('sigma') if 'sigma' in pars else 0};  // row of sigma",
         f"constexpr int BOLD_INPUT = {int(model.bold_input)};  // {sv[model.bold_input]}: hemodynamic input / sample",
         "",
         "// the drift of one region (scalar_drift), its summary observables",
         "template <typename T>",
         "__host__ __device__ __forceinline__ void drift(const T (&x)[S], const T (&c)[C], const T (&p)[P],",
         "                                               const T one, T (&dx)[S], T (&so)[O_ARR]) {",
         *(ind + ln for ln in drift),
         *([ind + "so[0] = one;  // unused"] if O == 0 else []),
         "}",
         "",
         "// the coupled state variables (network inputs c_v = sum_j C_ij x_v,j)",
         "template <typename T>",
         "__host__ __device__ __forceinline__ void coupled(const T (&x)[S], T (&c)[C]) {",
         *(f"{ind}c[{j}] = x[{v}];  // {sv[v]}" for j, v in enumerate(model.coupled_variables)),
         "}",
         "",
         "// additive noise: x_v += amp xi_j for the j-th noise variable v",
         "template <typename T>",
         "__host__ __device__ __forceinline__ void add_noise(T (&x)[S], const T (&xi)[XI], const T amp) {",
         *(f"{ind}x[{v}] = x[{v}] + amp * xi[{j}];  // {sv[v]}" for j, v in enumerate(noise)),
         *([ind + "(void)x; (void)xi; (void)amp;"] if not noise else []),
         "}",
         "",
         "// the state variables' intervals (NaN propagates)",
         "template <typename T>",
         "__host__ __device__ __forceinline__ void clip(T (&x)[S]) {",
         *(f"{ind}x[{s}] = rb_clip(x[{s}], {_literal(c[0])}, {_literal(c[1])});  // {sv[s]}"
           for s, c in enumerate(sv_.clip for sv_ in model.state_variables) if c is not None),
         *([ind + "(void)x;"] if all(s.clip is None for s in model.state_variables) else []),
         "}",
         "",
         "}  // namespace model",
         "}  // namespace rb",
         ""]
    return "\n".join(L)


def model_header(model) -> str:
    """The generated C++ header of ``model``'s declaration (see the module docstring)."""
    if not model.fused_path:
        raise DeclarationError(f"model {model.name!r} declares no scalar_drift: it has no fused path")
    key = declaration_key(model)
    if key not in _HEADERS:
        _HEADERS[key] = _header(model)
    return _HEADERS[key]


def header_hash(model) -> str:
    return hashlib.sha256(model_header(model).encode()).hexdigest()[:16]
