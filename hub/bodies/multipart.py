"""multipart/form-data, parsed only after the whole body was read within a bound (so the
parser never sees more), with every file closed on the way out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message, Receive, Scope


class MalformedForm(Exception):
    """The body is not a multipart form the hub will read; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@asynccontextmanager
async def bounded_form(scope: Scope, body: bytes, max_parts: int) -> AsyncIterator[FormData]:
    """The form in ``body`` (already read within its byte bound) of at most ``max_parts``."""
    _require_close_delimiter(body, Request(scope).headers.get("content-type", ""))
    try:
        # The body is bounded already, so a part may be as large as the body: the parser's
        # own 1 MB cap on text parts would refuse fields that are fine.
        form = await Request(scope, _replay(body)).form(
            max_files=max_parts, max_fields=max_parts, max_part_size=len(body) + 1
        )
    except MultiPartException as error:
        raise MalformedForm(error.message) from None
    except HTTPException as error:  # how Starlette reports a MultiPartException in an app
        raise MalformedForm(str(error.detail)) from None
    try:
        # The parser counts files and text fields apart; the bound is on parts in all.
        if len(form.multi_items()) > max_parts:
            raise MalformedForm(f"more than {max_parts} parts")
        yield form
    finally:
        await form.close()


def _require_close_delimiter(body: bytes, header: str) -> None:
    # python-multipart accepts a body cut short and drops its unfinished part, leaving that
    # part's temporary file open: a truncated upload could silently lose a file.
    boundary = parse_options_header(header)[1].get(b"boundary")
    if boundary is None:
        return  # the parser reports the missing boundary itself
    close = b"--" + boundary + b"--"
    if not body.startswith(close) and b"\r\n" + close not in body:
        raise MalformedForm("it is not terminated")


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
