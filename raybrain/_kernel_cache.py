"""The on-disk cache of raybrain's compiled numba kernels (see :mod:`raybrain.fused`).

Each kernel variant is a small generated Python module (:func:`raybrain.fused.kernel_source`)
whose module-level ``kernel`` is written to the cache directory and imported from there; numba's
per-function disk cache is attached to it, extended to store the
object code of the kernel's parfor libraries too (:class:`_ParforCacheImpl`), so a kernel loaded
from the cache gives bit for bit the results of one compiled in-process. File names carry
:func:`source_hash`; files are written atomically, so Ray workers may build the same variant at
once. This relies on numba internals (verified with numba 0.68.1): when they move, kernels are
compiled in-process with a warning, never loaded wrongly.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
import types
import warnings

import llvmlite
import llvmlite.binding as _ll
import numba
import numpy as np
from numba.core import caching as _nb_caching, sigutils

from . import _fastmath, hemodynamics, random


CACHE_DIR: str | os.PathLike | None = None
"""Where compiled kernels persist: a directory, ``""`` for no on-disk cache, or ``None`` (the
default) for ``$RAYBRAIN_CACHE_DIR``, else ``$XDG_CACHE_HOME/raybrain/kernels`` or
``~/.cache/raybrain/kernels``. Read whenever a kernel variant is first built in a process."""

CACHE_ENV = "RAYBRAIN_CACHE_DIR"



def _source_modules():
    """The modules whose source goes into the compiled kernels (the generator, the inlined helpers,
    every model's declaration): hashed into names."""
    from . import models

    model_modules = sorted({sys.modules[type(m).__module__] for m in map(models.get_model, models.MODELS)}
                           | {sys.modules[models.maths.__name__]}, key=lambda m: m.__name__)
    return (sys.modules["raybrain.fused"], sys.modules[__name__], _fastmath, random, hemodynamics, *model_modules)


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


def build_kernel_source(name: str, source: str):
    """The ``kernel`` defined by the generated module ``source``: written to the on-disk cache as
    ``name`` and loaded from there with the cache attached, or (caching off or impossible) run as an
    in-memory module and compiled in-process. The same source compiles to the same code either way."""
    header = (f"# Generated by {__name__}; sources hash {source_hash()}. Do not edit; may be deleted at any time.\n")
    text = header + source
    directory = kernel_cache_dir()
    if directory is not None:
        try:
            path = cached_kernel_path(name, directory)
            _write_atomic(path, text)
            kernel = _load_kernel_module(path).kernel
            _attach_cache(kernel)
            return kernel
        except (OSError, RuntimeError, AttributeError) as e:
            warnings.warn(f"raybrain: no on-disk cache for kernel {name} ({type(e).__name__}: {e}); "
                          "compiling in-process", RuntimeWarning, stacklevel=3)
    modname = f"_raybrain_kernel_{name}_inprocess"
    mod = types.ModuleType(modname)
    mod.__file__ = f"<raybrain kernel {name}>"
    sys.modules[modname] = mod
    exec(compile(text, mod.__file__, "exec"), mod.__dict__)
    return mod.kernel


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
