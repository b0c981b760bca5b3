"""Optimizer families of one's own, named ``package.module:Class`` in an experiment config.

``Class`` is resolved by import when the config is validated (and again on each Ray worker that
runs the family):

* a subclass of :class:`raybrain.search.Optimizer` (the ask/tell base) is a family like the
  built-in ones: population mode, and trial mode through its
  :meth:`~raybrain.search.Optimizer.trial_searcher` hook (by default the ask/tell optimizer
  itself, one generation at a time, ``population`` trials of it in flight);
* a subclass of Tune's ``ray.tune.search.Searcher`` is a trial-mode family
  (:class:`SearcherFamily`): built with the config's ``settings`` as keyword arguments, plus
  ``seed=`` the run seed when its constructor takes a ``seed``; population mode refuses it.

The module must be importable by the driver and by every Ray worker: install it
(``pip install -e``), or keep it under the directory ``raybrain run`` is started from. Ray puts
the driver's working directory on its workers' ``sys.path``, and the driver looks there too
(last, after the installed packages) when the module is not found otherwise; on a cluster the
directory must exist on every node, or the package be installed there.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from typing import Any, ClassVar, Mapping

from .base import Optimizer, SettingError

__all__ = ["import_family", "SearcherFamily"]


@functools.lru_cache(maxsize=None)
def import_family(name: str) -> type[Optimizer]:
    """The family class named ``module:Class`` (``Class`` may be dotted); a Tune ``Searcher``
    comes back as a :class:`SearcherFamily`. ValueError, one line, saying what failed."""
    module, _, attr = name.partition(":")
    if not module or not attr or ":" in attr:
        raise ValueError(f"optimizer {name!r}: name your own family as 'package.module:Class'")
    try:
        obj = _import(module)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported, in one line
        raise ValueError(f"optimizer {name!r}: cannot import module {module!r} ({_one_line(exc)})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"optimizer {name!r}: module {module!r} has no attribute {attr!r}") from None
    if isinstance(obj, type) and issubclass(obj, Optimizer):
        return obj
    searcher = _searcher_base()
    if searcher is not None and isinstance(obj, type) and issubclass(obj, searcher):
        return type(attr.rsplit(".", 1)[-1], (SearcherFamily,),
                    {"name": name, "searcher": obj, "__module__": __name__, "__doc__": obj.__doc__})
    raise ValueError(f"optimizer {name!r}: {attr} is not a subclass of raybrain.search.Optimizer (ask/tell) "
                     f"nor of ray.tune.search.Searcher")


class SearcherFamily(Optimizer):
    """A Tune ``Searcher`` class (:attr:`searcher`) as a trial-mode family; see the module
    docstring. Settings are the keyword arguments of its constructor."""

    modes = ("trial",)
    searcher: ClassVar[type | None] = None

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any] | None = None, mode: str = "population") -> dict[str, Any]:
        if mode not in cls.modes:
            raise SettingError("mode", f"optimizer {cls.name!r} is a Tune Searcher: it runs in mode 'trial' only; "
                               "for population mode subclass raybrain.search.Optimizer (ask/tell)")
        settings = dict(settings or {})
        names, any_keyword = _keywords(cls.searcher)
        for key in settings:
            if key == "seed" or not (key in names or any_keyword):
                what = "the run seed is passed as 'seed'" if key == "seed" else \
                    f"accepted: {', '.join(sorted(names - {'seed'})) or 'none'}"
                raise SettingError(f"settings.{key}", f"setting {key!r} is not a keyword argument of "
                                   f"{cls.searcher.__qualname__}.__init__ ({what})")
        return settings

    @classmethod
    def trial_searcher(cls, names, bounds, seed: int, settings: Mapping[str, Any], max_concurrent: int):
        kwargs = dict(settings)
        if "seed" in _keywords(cls.searcher)[0]:
            kwargs["seed"] = int(seed)
        return cls.searcher(**kwargs)

    def _setup(self) -> None:
        raise ValueError(f"optimizer {self.name!r} is a Tune Searcher: it has no ask/tell (population mode) form")


def _keywords(cls) -> tuple[set[str], bool]:
    """The named keyword arguments of ``cls.__init__``, and whether it takes ``**kwargs``."""
    params = inspect.signature(cls.__init__).parameters.values()
    names = {p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _searcher_base():
    """Tune's ``Searcher`` when Ray Tune is loaded (a Searcher subclass imported it), else None:
    validating a config never imports Ray."""
    mod = sys.modules.get("ray.tune.search.searcher")
    return getattr(mod, "Searcher", None)


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        missing = exc.name or ""
        if not (module == missing or module.startswith(missing + ".")) or \
                cwd in {os.path.abspath(p or os.curdir) for p in sys.path}:
            raise
    # as Ray does for its workers: the driver's working directory, after the installed packages
    sys.path.append(cwd)
    importlib.invalidate_caches()
    return importlib.import_module(module)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
