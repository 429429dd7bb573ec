"""What every request and response shape is built from: bounded text, ids, URLs, times.

The shapes themselves (``msgspec.Struct``s) live in the package that owns each concept,
``hub.tasks.shapes``, ``hub.inbox.shapes`` and so on. The same types validate a request
body (``hub.web.decode``) and generate the OpenAPI components (``hub.web.openapi``), so a
constraint is written once and cannot say one thing to clients and check another.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, TypeVar

from msgspec import UNSET, Meta, UnsetType

T = TypeVar("T")

# Patterns say why a string was refused only as a regex; these say it in words (a
# refusal names the field and quotes this, never the pattern).
NO_NUL = "^[^\\x00]*$"
# Something other than whitespace, and no NUL. Written so that no part can take what
# another could (a backtracking regex stays linear over a 32,000-character prompt).
NOT_BLANK = "^\\s*[^\\s\\x00][^\\x00]*$"
PATTERN_MEANINGS = MappingProxyType(
    {NO_NUL: "must not contain NUL", NOT_BLANK: "must not be blank or contain NUL"}
)


def bounded(max_length: int, description: str | None = None) -> Meta:
    """A text field: at most ``max_length`` characters, no NUL (the store and the
    providers take C strings somewhere along the way)."""
    return Meta(max_length=max_length, pattern=NO_NUL, description=description)


@dataclass(frozen=True, slots=True)
class Ident:
    """One kind of id: ``<prefix>_`` and 24 hex digits. The pattern checks ids in paths
    and describes them in the schema; ``new`` makes them."""

    prefix: str

    @property
    def pattern(self) -> str:
        return f"^{self.prefix}_[0-9a-f]{{24}}$"

    def matches(self, value: str) -> bool:
        return re.fullmatch(self.pattern, value) is not None

    def new(self) -> str:
        return f"{self.prefix}_{secrets.token_hex(12)}"


def given(value: T | None) -> T | UnsetType:
    """For a field that an answer leaves out, rather than shows as null, when there is
    nothing to say (typed ``X | UnsetType = UNSET``)."""
    return UNSET if value is None else value


Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Url = Annotated[str, Meta(extra_json_schema={"format": "uri"})]
Count = Annotated[int, Meta(ge=0)]

# The hub's ids, one pattern each: routes check path ids with it, the schema shows it.
CHANNEL_IDS = Ident("ch")
TASK_IDS = Ident("task")
BLOB_IDS = Ident("blob")
WEBHOOK_IDS = Ident("wh")
ChannelId = Annotated[str, Meta(pattern=CHANNEL_IDS.pattern)]
TaskId = Annotated[str, Meta(pattern=TASK_IDS.pattern)]
BlobId = Annotated[str, Meta(pattern=BLOB_IDS.pattern)]
WebhookId = Annotated[str, Meta(pattern=WEBHOOK_IDS.pattern)]
# An id as a request body names it: any short text, so that one which is no id at all is
# answered as an unknown one is (404, or "no such channel"), not told apart.
Reference = Annotated[str, bounded(64)]
