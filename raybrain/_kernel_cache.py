"""The on-disk cache of raybrain's compiled numba kernels (see :mod:`raybrain.fused`).

Each kernel variant (a factory in :mod:`raybrain.fused` and its arguments) is written as a small
generated Python module whose module-level ``kernel`` compiles to exactly what the factory's
closure compiles to; numba's per-function disk cache is attached to it, extended to store the
object code of the kernel's parfor libraries too (:class:`_ParforCacheImpl`), so a kernel loaded
from the cache gives bit for bit the results of one compiled in-process. File names carry
:func:`source_hash`; files are written atomically, so Ray workers may build the same variant at
once. This relies on numba internals (verified with numba 0.68.1): when they move, kernels are
compiled in-process with a warning, never loaded wrongly.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
import textwrap
import warnings

import llvmlite
import llvmlite.binding as _ll
import numba
import numpy as np
from numba.core import caching as _nb_caching, sigutils

from . import _fastmath, hemodynamics, random
from .models import rww


CACHE_DIR: str | os.PathLike | None = None
"""Where compiled kernels persist: a directory, ``""`` for no on-disk cache, or ``None`` (the
default) for ``$RAYBRAIN_CACHE_DIR``, else ``$XDG_CACHE_HOME/raybrain/kernels`` or
``~/.cache/raybrain/kernels``. Read whenever a kernel variant is first built in a process."""

CACHE_ENV = "RAYBRAIN_CACHE_DIR"



def _source_modules():
    """The modules whose source goes into the compiled kernels (inlined helpers): hashed into names."""
    return (sys.modules["raybrain.fused"], sys.modules[__name__], _fastmath, random, rww, hemodynamics)


_FIXED_MTIME = 1_000_000_000  # the generated files' mtime: the same file always has the same stamp


def kernel_cache_dir() -> str | None:
    """The directory of the on-disk kernel cache, created if needed, or ``None`` when caching is
    off (:data:`CACHE_DIR` or ``$RAYBRAIN_CACHE_DIR`` empty) or the directory cannot be written."""
    d = CACHE_DIR if CACHE_DIR is not None else os.environ.get(CACHE_ENV)
    if d is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "raybrain", "kernels")
    d = os.fspath(d)
    if not d:
        return None
    d = os.path.abspath(os.path.expanduser(d))
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return None
    return d if os.access(d, os.W_OK | os.X_OK) else None


_SOURCE_HASH = []


def source_hash() -> str:
    """Hash of everything that determines the compiled kernels: the source files of the modules
    inlined into them and the numba, llvmlite, NumPy and Python versions (16 hex digits)."""
    if not _SOURCE_HASH:
        h = hashlib.sha256()
        for mod in _source_modules():
            h.update(mod.__name__.encode() + b"\0")
            with open(inspect.getsourcefile(mod), "rb") as f:
                h.update(f.read())
        for v in (numba.__version__, llvmlite.__version__, np.__version__, sys.version):
            h.update(b"\0" + v.encode())
        _SOURCE_HASH.append(h.hexdigest()[:16])
    return _SOURCE_HASH[0]


def _global_name(value, home) -> str:
    """The name under which ``value`` (a helper the factories close over) is a global of ``home``."""
    for name, v in vars(home).items():
        if v is value and not name.startswith("__"):
            return name
    raise ValueError(f"{value!r} is not a global of {home.__name__}")


def _literal(value) -> str:
    """``value`` (bool, int, float, str or tuples of them) as source that evaluates back to it exactly."""
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return repr(value)  # repr of a float round-trips exactly
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a literal")


def kernel_module_source(factory, args: dict) -> str:
    """The source of a module that defines the factory's ``kernel`` for ``args``: numba helpers in
    ``args`` are imported from the factory's module under the parameter's name, other values are written
    as literals, and the factory's body (less its docstring and ``return``) follows verbatim, so
    the module-level ``kernel`` compiles to what the closure compiles to. Deterministic, so
    concurrent writers produce identical files. (:func:`build_kernel` attaches the on-disk
    cache to ``kernel``.)"""
    src = textwrap.dedent(inspect.getsource(factory))
    fdef = ast.parse(src).body[0]
    assert isinstance(fdef, ast.FunctionDef) and fdef.name == factory.__name__
    params = [a.arg for a in fdef.args.args]
    if sorted(params) != sorted(args):
        raise TypeError(f"{factory.__name__} takes {params}, got {sorted(args)}")
    lines = src.splitlines()
    body = fdef.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if isinstance(body[-1], ast.Return):
        body = body[:-1]
    if not any(isinstance(b, ast.FunctionDef) and b.name == "kernel" for b in body):
        raise ValueError(f"{factory.__name__} must define a function named kernel")
    # names the body reads from this module's globals (numpy, numba, the inlined helpers ...)
    assigned = set(params)
    for node in ast.walk(fdef):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            assigned.add(node.id)
        elif isinstance(node, ast.FunctionDef):
            assigned.add(node.name)
        elif isinstance(node, ast.arg):
            assigned.add(node.arg)
    home = sys.modules[factory.__module__]
    here = vars(home)
    used = sorted({n.id for stmt in body for n in ast.walk(stmt)
                   if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in assigned
                   and n.id in here})
    out = [f"# Generated by {__name__} from {factory.__name__}; sources hash {source_hash()}.",
           f"# Do not edit; {__name__} attaches its on-disk cache to `kernel`. May be deleted at any time.",
           f"from {home.__name__} import {', '.join(used)}" if used else ""]
    for p in params:
        v = args[p]
        if callable(v):
            out.append(f"from {home.__name__} import {_global_name(v, home)} as {p}")
        else:
            out.append(f"{p} = {_literal(v)}")
    out.append("")
    for stmt in body:
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        seg = textwrap.dedent("\n".join(lines[first - 1:stmt.end_lineno]))
        out.extend(["", seg] if isinstance(stmt, ast.FunctionDef) else [seg])
    return "\n".join(out) + "\n"


def _write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` unless it already holds it: a temporary file in the same
    directory, the fixed mtime, then ``os.replace`` (atomic; concurrent writers are harmless)."""
    data = text.encode()
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".py", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.utime(tmp, (_FIXED_MTIME, _FIXED_MTIME))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_kernel_path(name: str, directory: str | None = None) -> str | None:
    """The generated module of the kernel variant ``name`` (e.g. ``"rww_float32"``) in the cache
    directory (``None`` when caching is off)."""
    directory = directory or kernel_cache_dir()
    return None if directory is None else os.path.join(directory, f"{name}_{source_hash()}.py")


def _load_kernel_module(path: str):
    modname = "_raybrain_kernel_" + os.path.splitext(os.path.basename(path))[0]
    mod = sys.modules.get(modname)
    if mod is not None and getattr(mod, "__file__", None) == path:
        return mod
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod  # numba looks functions' modules up by name when it loads a cache entry
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[modname]
        raise
    return mod


def build_kernel(factory, name: str, args: dict):
    """``factory(**args)``'s kernel, from the on-disk cache when there is one (its module written
    first if needed); compiled in-process from the closure, as before, otherwise."""
    directory = kernel_cache_dir()
    if directory is not None:
        try:
            path = cached_kernel_path(name, directory)
            _write_atomic(path, kernel_module_source(factory, args))
            kernel = _load_kernel_module(path).kernel
            _attach_cache(kernel)
            return kernel
        except (OSError, RuntimeError, AttributeError) as e:
            # unwritable after all, numba finds no cache locator, or numba's internals moved on
            warnings.warn(f"raybrain: no on-disk cache for kernel {name} ({type(e).__name__}: {e}); "
                          "compiling in-process", RuntimeWarning, stacklevel=3)
    return factory(**args)


# numba's cache stores a function's own object code. A prange kernel also runs code from the
# libraries its parfor was compiled into (the gufunc body and its threading wrapper): in the
# process that compiles it, the kernel calls those libraries' code, already loaded, whereas the
# kernel's object code holds its own copy of them, optimised once more inside the kernel's module.
# With fast maths the two copies differ in the last bits, so numba's plain cache=True would change
# the float32 results of every process that loads the kernel instead of compiling it. This cache
# therefore also stores the parfor libraries' object code and loads it before the kernel's, so the
# kernel resolves to the same code as in the compiling process: identical results either way.

class _ParforCacheImpl(_nb_caching.CompileResultCacheImpl):
    """numba's cache implementation of compile results, plus the kernel's parfor libraries."""

    def reduce(self, cres):
        libs = _parfor_libraries(cres.library)
        linked = tuple((_external_functions(lib), lib.serialize_using_object_code()) for lib in libs)
        names = sum((n for n, _ in linked), _external_functions(cres.library))
        magic = cres.library.codegen.magic_tuple()
        return (magic, names, linked, tuple(cres.reload_init or ()), super().reduce(cres))

    def rebuild(self, target_context, payload):
        magic, names, linked, reload_init, main = payload
        codegen = target_context.codegen()
        # numba's index maps (signature, CPU) to numbered data files; processes on different CPUs
        # sharing a directory can overwrite each other's file of the same number, so check
        if magic != codegen.magic_tuple():
            return None
        # loading a second definition of a symbol crashes the process; such a clash (the same
        # entry loaded twice, or two entries compiled in different processes whose generated
        # names coincide) makes this a cache miss instead: numba compiles afresh and saves anew
        if any(codegen._engine.is_symbol_defined(n) for n in names):
            return None
        for fn in reload_init:  # e.g. start the threading layer, whose symbols the gufuncs use
            fn()
        libs = [codegen.unserialize_library(state) for _, state in linked]
        cres = super().rebuild(target_context, main)
        _LOADED_LIBRARIES.extend(libs)  # their code must stay loaded as long as the kernel's
        return cres

    def check_cachable(self, cres):
        # every fused kernel has a parfor: finding none means numba's internals have changed, and
        # a plain cache entry would not reproduce the in-process results, so it is not written
        try:
            libs = _parfor_libraries(cres.library)
            ok = bool(libs) and all(getattr(lib, "_compiled_object", None) is not None for lib in libs)
        except AttributeError:
            ok = False
        if not ok:
            warnings.warn("raybrain: fused kernel not cached on disk: its parfor libraries' object code "
                          "was not found", RuntimeWarning)
            return False
        return super().check_cachable(cres)


class _ParforFunctionCache(_nb_caching.FunctionCache):
    """numba's per-function disk cache with :class:`_ParforCacheImpl`; an entry is used only if it
    was compiled for the signature asked for."""
    _impl_class = _ParforCacheImpl

    def _load_overload(self, sig, target_context):
        cres = super()._load_overload(sig, target_context)
        if cres is not None and tuple(cres.signature.args) != tuple(sigutils.normalize_signature(sig)[0]):
            return None
        return cres


_LOADED_LIBRARIES = []


def _external_functions(lib):
    return tuple(f.name for f in lib.get_defined_functions() if f.linkage == _ll.Linkage.external)


def _parfor_libraries(library):
    """The libraries linked into ``library`` (transitively, dependencies first, as they were
    compiled) that define parfor gufunc code."""
    out, seen = [], set()

    def visit(lib):
        for sub in lib._linking_libraries:
            if id(sub) not in seen:
                seen.add(id(sub))
                visit(sub)
                if any("__numba_parfor_gufunc" in n for n in _external_functions(sub)):
                    out.append(sub)

    visit(library)
    return out


class _keeping_object_code:
    """While numba compiles a kernel (under its compiler lock), enable object caching on every
    library created (as numba does for the function's own), so that the object code of the
    kernel's parfor libraries is kept and can be cached with it."""

    def __init__(self, codegen):
        self.codegen = codegen

    def __enter__(self):
        create = type(self.codegen).create_library

        def create_library(*args, **kwargs):
            lib = create(self.codegen, *args, **kwargs)
            lib.enable_object_caching()
            return lib

        self.codegen.create_library = create_library

    def __exit__(self, *exc):
        del self.codegen.create_library


def _attach_cache(kernel) -> None:
    """Give the dispatcher ``kernel`` (a module-level function) the parfor-aware disk cache."""
    if isinstance(kernel._cache, _ParforFunctionCache):
        return
    cache = _ParforFunctionCache(kernel.py_func)
    compiler = kernel._compiler
    compile_ = compiler.compile

    def compile_keeping_object_code(args, return_type):
        with _keeping_object_code(kernel.targetctx.codegen()):
            return compile_(args, return_type)

    compiler.compile = compile_keeping_object_code
    kernel._cache = cache
