"""Request bodies into their shapes, and msgspec's refusals into the hub's: 400
``bad_request`` for a body that is not JSON, 422 ``invalid_request`` naming the field
(``$.input.images[0]`` is ``input.images[0]``, the top level ``body``), in words.

The shapes do the checking; this module only says what they refused, the way the hub
always has: ``"input.n: must be at most 10"``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from msgspec import inspect

from hub.errors import Invalid, Malformed, invalid
from hub.shapes import PATTERN_MEANINGS

T = TypeVar("T")

_PATH = re.compile(r"\$(?:\.[A-Za-z_]\w*|\[\d+\]|\[\.\.\.\])*")
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")
_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "array": "a list",
    "object": "a JSON object",
}
_SIDES = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}


def decode(data: bytes, shape: type[T]) -> T:
    """``data`` (JSON) as ``shape``, or the refusal, as ``Malformed`` or ``Invalid``."""
    try:
        return msgspec.json.decode(data, type=shape)
    except msgspec.ValidationError as exc:
        # msgspec checks as it parses, so a shape error can come before a syntax error
        # further on: a body that is not JSON at all is a 400 wherever it breaks.
        if not _is_json(data):
            raise _not_json() from None
        raise refusal(exc, shape) from None
    except (msgspec.DecodeError, RecursionError):
        raise _not_json() from None


def convert(value: Any, shape: Any, *, root: str = "body") -> Any:
    """Python data (a form's fields, say) as ``shape``, checked as a JSON body would be;
    ``root`` names the value itself in a refusal."""
    try:
        return msgspec.convert(value, type=shape)
    except msgspec.ValidationError as exc:
        raise refusal(exc, shape, root) from None


def refusal(exc: msgspec.ValidationError, shape: Any, root: str = "body") -> Invalid:
    """The 422 for what msgspec refused: the field from its path, its reason in words."""
    text, path = _split(str(exc))
    steps = _steps(path)
    for lead, reason in (
        ("Object missing required field `", "is required"),
        ("Object contains unknown field `", "unknown field"),
    ):
        if text.startswith(lead) and text.endswith("`"):
            name = text[len(lead) : -1]
            return invalid(_field([*steps, name], root), reason)
    return invalid(_field(steps, root), _reason(text, _at(shape, steps)))


def field_of(path: str, root: str = "body") -> str:
    """``$.input.images[0]`` -> ``input.images[0]``; ``$`` -> ``body`` (``root``)."""
    return _field(_steps(path), root)


def _split(message: str) -> tuple[str, str]:
    """msgspec's ``"<reason> - at `<path>`"``, or just the reason at the top level."""
    text, sep, path = message.rpartition(" - at `")
    if sep and path.endswith("`") and _PATH.fullmatch(path[:-1]):
        return text, path[:-1]
    return message, "$"


def _steps(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _STEP.findall(path)]


def _field(steps: list[str | int], root: str = "body") -> str:
    field = ""
    for step in steps:
        field += f"[{step}]" if isinstance(step, int) else (f".{step}" if field else step)
    return field or root


def _reason(text: str, info: inspect.Type | None) -> str:
    if match := re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", text):
        wanted = " or ".join(_KINDS.get(kind, kind) for kind in match[1].split(" | "))
        return f"must be {wanted}, not {_KINDS.get(match[2], match[2])}"
    if match := re.fullmatch(r"Expected `(\w+)` of length (<=|>=) (\d+)", text):
        count, plural = match[3], "" if match[3] == "1" else "s"
        if match[1] == "str":
            return f"must be {_SIDES[match[2]]} {count} character{plural} long"
        return f"must hold {_SIDES[match[2]]} {count} item{plural}"
    if match := re.fullmatch(r"Expected `(?:int|float)` (>=|<=|>|<) (-?[\d.e+]+)", text):
        return f"must be {_SIDES[match[1]]} {match[2]}"
    if text.startswith("Expected `str` matching regex") and isinstance(info, inspect.StrType):
        return PATTERN_MEANINGS.get(info.pattern or "", "is not in the expected form")
    if text.startswith("Invalid enum value") and (allowed := _allowed(info)) is not None:
        return f"must be one of {', '.join(allowed)}"
    if text == "Number out of range":
        return "is out of range"
    return text[:1].lower() + text[1:]


def _at(shape: Any, steps: list[str | int]) -> inspect.Type | None:
    """The type at ``steps`` inside ``shape`` (an optional field's non-null type)."""
    info: inspect.Type | None = _plain(inspect.type_info(shape))
    for step in steps:
        if isinstance(info, inspect.UnionType):  # one or several: the member the step fits
            kind = inspect.ListType if isinstance(step, int) else inspect.StructType
            members = [_plain(t) for t in info.types]
            info = next((t for t in members if isinstance(t, kind)), None)
        if isinstance(step, int) and isinstance(info, inspect.ListType):
            info = _plain(info.item_type)
        elif isinstance(step, str) and isinstance(info, inspect.StructType):
            found = [field.type for field in info.fields if field.encode_name == step]
            info = _plain(found[0]) if found else None
        else:
            return None
    return info


def _plain(info: inspect.Type) -> inspect.Type:
    while True:
        if isinstance(info, inspect.Metadata):
            info = info.type
        elif isinstance(info, inspect.UnionType):
            others = [t for t in info.types if not isinstance(t, inspect.NoneType)]
            if len(others) != 1:
                return info
            info = others[0]
        else:
            return info


def _allowed(info: inspect.Type | None) -> list[str] | None:
    if isinstance(info, inspect.UnionType):  # a choice, or a list of choices
        info = next((t for t in info.types if isinstance(t, inspect.LiteralType)), None)
    if isinstance(info, inspect.LiteralType):
        return [str(value) for value in info.values]
    if isinstance(info, inspect.EnumType):
        return [str(member.value) for member in info.cls]
    return None


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):  # ValidationError: a number out of range
        return False
    return True


def _not_json() -> Malformed:
    return Malformed("bad_request", "the body is not valid JSON")
