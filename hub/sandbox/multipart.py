"""A small multipart/form-data parser for bodies already read under a byte cap.

Starlette's form parser needs the python-multipart package, which the hub does not
depend on. The emulators only parse bodies they have buffered whole (and bounded), so
splitting on the boundary is enough: by RFC 2046 the delimiter cannot occur inside a part.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

MAX_PARTS = 100
_MAX_BOUNDARY = 200


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True)
class FormPart:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError(f"field {self.name!r} is not UTF-8 text") from None


def _param(header_name: str, header_value: str, param: str) -> str | None:
    message = Message()
    message[header_name] = header_value
    value = message.get_param(param, header=header_name)
    if value is None:
        return None
    return collapse_rfc2231_value(value)


def is_multipart(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


def parse_multipart(
    body: bytes, content_type: str, *, max_parts: int = MAX_PARTS
) -> list[FormPart]:
    boundary = _param("content-type", content_type, "boundary")
    if not boundary or len(boundary) > _MAX_BOUNDARY:
        raise MultipartError("multipart body without a usable boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    # Prefixing CRLF lets the first delimiter, which may open the body, split like the rest.
    sections = (b"\r\n" + body).split(delimiter)
    parts: list[FormPart] = []
    for section in sections[1:]:
        if section.startswith(b"--"):
            return parts
        if len(parts) >= max_parts:
            raise MultipartError(f"more than {max_parts} parts")
        parts.append(_parse_part(section))
    raise MultipartError("multipart body is not terminated")


def _parse_part(section: bytes) -> FormPart:
    # After the delimiter: optional transport padding, then CRLF, headers, a blank line.
    section = section.lstrip(b" \t")
    if not section.startswith(b"\r\n"):
        raise MultipartError("malformed part delimiter")
    section = section[2:]
    if section.startswith(b"\r\n"):
        head, content = b"", section[2:]
    else:
        head, separator, content = section.partition(b"\r\n\r\n")
        if not separator:
            raise MultipartError("part without a header/body separator")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        header, colon, value = line.decode("utf-8", "replace").partition(":")
        if not colon:
            raise MultipartError("malformed part header")
        headers[header.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    if disposition.split(";", 1)[0].strip().lower() != "form-data":
        raise MultipartError("part is not form-data")
    field_name = _param("content-disposition", disposition, "name")
    if not field_name:
        raise MultipartError("form-data part without a name")
    return FormPart(
        name=field_name,
        data=content,
        filename=_param("content-disposition", disposition, "filename"),
        content_type=headers.get("content-type"),
    )
