"""Errors of an experiment config, each named by its key path.

Validation raises :class:`_At` (a path relative to the section that raises it, and a message);
:func:`_format` turns pydantic's :class:`~pydantic.ValidationError` into ``(key path, message)``
pairs such as ``("optimizers[2].name", "unknown optimizer 'cmaa' (did you mean 'cmaes'?)")``;
:class:`ConfigError` carries them to the user, one line each.
"""
from __future__ import annotations

from pydantic import ValidationError

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An invalid experiment config; ``errors`` is a list of ``(key path, message)``."""

    def __init__(self, errors: list[tuple[str, str]], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        head = f"{source}: invalid experiment config" if source else "invalid experiment config"
        lines = [f"{p}: {m}" if p else m for p, m in self.errors]
        super().__init__(lines[0] if len(lines) == 1 and not source else
                         head + "\n" + "\n".join("  " + x for x in lines))


class _At(ValueError):
    """A validation error at ``path`` relative to the model that raises it."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(message)


def _join(base: str, rel: str) -> str:
    if not rel:
        return base
    if not base or rel.startswith("["):
        return base + rel
    return f"{base}.{rel}"


def _loc(loc) -> str:
    out = ""
    for part in loc:
        out = out + f"[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out


def _format(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-after["))]
        path, msg = _loc(loc), e["msg"]
        ctx = e.get("ctx") or {}
        exc = ctx.get("error")
        if isinstance(exc, _At):
            path, msg = _join(path, exc.path), exc.message
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif e["type"] == "unknown_key":
            path = _join(path, str(ctx["key"]))
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif "input" in e and not isinstance(e["input"], (dict, list)):
            msg = f"{msg}, got {e['input']!r}"
        out.append((path, msg))
    return out

