"""One way to validate a recipe section: a pydantic model with one-line errors, from one formatter.

``data:``, ``train:`` and ``eval:`` are pydantic models inside ``models.recipe.Recipe``. The ``model:`` section's
parts are pydantic models too (``Section`` subclasses: the backbone, block rules, detection heads and options),
validated by the code that builds them because which parts exist depends on the registered model type; the
defaults of a registered model type or head come from its factory's signature (``signature_defaults``). Every
error is one line starting with the key path. No torch here: recipes validate before the heavy imports.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    """A model-section part: unknown keys are errors (a typo must never be ignored); values are checked by the
    builder, which knows what they mean. ``what`` names an unknown key in errors (key, option, selector)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    what: ClassVar[str] = "key"


def close_hint(key: str, allowed: Iterable[str]) -> str:
    """``did you mean 'x'?`` for a near miss, else the list of accepted keys."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"accepted: {', '.join(allowed)}"


def fields_at(root: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Accepted keys at a pydantic error location under ``root`` (for 'did you mean')."""
    cls: Any = root
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = field.annotation
    return list(getattr(cls, "model_fields", {}))


def one_line(exc: ValidationError, root: type[BaseModel], where: str = "") -> str:
    """The first problem of ``exc`` (validating ``root`` at key path ``where``) as one line naming the key.

    Recipe sections (``where`` empty) name an unknown key in the path (``train.max_epoch: unknown key``); a
    model part names itself and quotes the key (``model.backbone: unknown key 'nmae'``), as builders always did.
    """
    errors = exc.errors()
    if where:  # a model part: unknown keys first, then missing ones, as the builders report them
        errors = sorted(errors, key=lambda e: {"extra_forbidden": 0, "missing": 1}.get(e["type"], 2))
    err = errors[0]
    loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and p.endswith("]"))]
    full = ".".join([where, *loc] if where else loc) or "recipe"
    parent = ".".join([where, *loc[:-1]])
    if err["type"] == "extra_forbidden":
        hint = close_hint(loc[-1], fields_at(root, loc[:-1]))
        if where:
            return f"{parent}: unknown {getattr(root, 'what', 'key')} '{loc[-1]}'; {hint}"
        return f"{full}: unknown key; {hint}"
    if err["type"] == "missing":
        if where:
            return f"{parent}: missing required key '{loc[-1]}'; add it (see docs/models.md)"
        return f"{full}: required; add it to the config"
    path = full
    msg = err["msg"].removeprefix("Value error, ")
    if not loc or msg.startswith(f"{path}:"):  # a validator's own message already names the key
        return msg
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{path}: {msg}{shown}"


def validate_section(
    schema: type[Section], value: Any, where: str, error: type[Exception] = ValueError
) -> dict[str, Any]:
    """``value`` checked against ``schema``, with the schema's defaults filled in; else ``error`` (one line)."""
    if not isinstance(value, Mapping):
        raise error(f"{where}: expected a mapping (key: value), got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise error(f"{where}: unknown {schema.what} {bad[0]!r}; {close_hint(str(bad[0]), schema.model_fields)}")
    try:
        return schema.model_validate(dict(value)).model_dump()
    except ValidationError as exc:
        raise error(one_line(exc, schema, where)) from None


def signature_defaults(factory: Callable[..., Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    """The keyword arguments of ``factory`` that have defaults, with them (a class: its ``__init__``'s)."""
    skip = set(skip)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {
        name: p.default
        for name, p in params.items()
        if p.default is not p.empty and name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def plain(value: Any) -> Any:
    """``value`` with tuples as lists and mappings as dicts, as YAML writes and reads them back."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
