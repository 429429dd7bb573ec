"""A callback's body kept once: its event's row holds the event JSON with ``null`` where the
body goes, and the body is put back from the delivery's raw bytes when the row is read.

How the body is put back is the event's ``body_form``, decided at intake by how the event
shows the body; each is a pure function of the raw bytes, so a replayed frame is byte for
byte the frame sent live:

- ``raw``: the raw bytes are the body's JSON as the event shows it (compact JSON);
- ``json``: the raw bytes are JSON the event shows re-encoded (other spacing, escapes);
- ``text``: UTF-8 text, shown as a JSON string;
- ``base64``: bytes that are not text, shown as a JSON string of their base64.

A body the event does not show this way (a form, parsed to an object; a body too large
for the event) stays inline in the event's data, as do rows written before this existed.
"""

from __future__ import annotations

import base64

import msgspec
import orjson

FORMS = frozenset({"raw", "json", "text", "base64"})
PLACEHOLDER = b"null"
_KEY = b',"body":'
_encode = msgspec.json.Encoder().encode


def body_json(form: str, body: bytes) -> bytes:
    """The body's JSON as its event shows it."""
    if form == "raw":
        return body
    if form == "json":
        return _encode(orjson.loads(body))
    if form == "text":
        return _encode(body.decode())
    if form == "base64":
        return _encode(base64.b64encode(body).decode())
    raise ValueError(f"unknown body_form {form!r}")


def placeholder_at(stub: bytes) -> int:
    """Where the body's ``null`` is in an event encoded without its body. The first
    ``,"body":`` is the key: an unescaped quote cannot occur inside the strings before it."""
    at = stub.find(_KEY)
    if at < 0 or stub[at + len(_KEY) : at + len(_KEY) + 4] != PLACEHOLDER:
        raise ValueError("the event has no body placeholder")
    return at + len(_KEY)


def assemble(stub: bytes, at: int, form: str, body: bytes) -> bytes:
    """The event's data: ``stub`` with the body put back at ``at``."""
    return b"".join((stub[:at], body_json(form, body), stub[at + len(PLACEHOLDER) :]))
