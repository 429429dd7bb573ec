"""Blobs: upload an input image, read a blob with a key, or through a signed URL (providers)."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from hub.access.tokens import BLOB
from hub.blobs import images, records, shapes
from hub.bodies.multipart import MalformedForm, bounded_form
from hub.bodies.read import read_body
from hub.errors import Malformed, TooLarge, Unsupported, invalid, not_found
from hub.shapes import BLOB_IDS
from hub.store.base import Blob
from hub.web.routes.common import hub, json_response


async def upload(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise Unsupported("unsupported_media_type", "send multipart/form-data with a file field")
    # Read within the bound first, then parse what was read: the parser never sees more.
    limit = state.settings.max_upload_bytes + 64 * 1024
    body = await read_body(request, limit, state.settings.body_timeout_seconds)
    try:
        async with bounded_form(request.scope, body, max_parts=8) as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise invalid("file", "is required: a multipart file field named 'file'")
            data = await file.read()
    except MalformedForm as error:
        message = f"the multipart body cannot be read: {error.reason}"
        raise Malformed("bad_request", message) from None
    if len(data) > state.settings.max_upload_bytes:
        raise TooLarge(
            "payload_too_large", f"file: larger than {state.settings.max_upload_bytes} bytes"
        )
    content_type = await images.image_type(data, "file")
    await state.quotas.check(owner, blob_bytes=len(data))
    blob = records.make(owner, data, content_type)
    await state.store.put_blob(blob)
    answer = shapes.Blob(
        id=blob.id,
        url=records.url(state.settings.public_url, blob.id),
        content_type=blob.content_type,
        size=blob.size,
    )
    return json_response(answer, 201)


async def show(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    blob_id = request.path_params["blob_id"]
    blob = await state.store.get_blob(blob_id) if BLOB_IDS.matches(blob_id) else None
    if blob is None or blob.owner != owner:
        raise not_found("blob")
    return _bytes(blob)


async def public(request: Request) -> Response:
    """A blob at a signed, expiring URL: how providers fetch the hub's input images."""
    state = hub(request)
    claims = state.signer.verify(BLOB, request.path_params["token"])
    blob = await state.store.get_blob(claims.blob_id or "")
    if blob is None:
        raise not_found("blob")
    return _bytes(blob)


def _bytes(blob: Blob) -> Response:
    """The blob's bytes, unable to run: served from the hub's origin, an SVG or HTML
    answer would run its script there. Only the three image types are shown as such
    (anything else, kept by an older hub, is a download), and the page a browser makes
    of it is a sandbox that may load nothing."""
    image = blob.content_type in images.EXTENSIONS
    extension = images.EXTENSIONS.get(blob.content_type, "bin")
    disposition = "inline" if image else "attachment"
    headers = {
        "cache-control": "private, max-age=3600",
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox; default-src 'none'",
        "content-disposition": f'{disposition}; filename="{blob.id}.{extension}"',
    }
    media = blob.content_type if image else "application/octet-stream"
    return Response(blob.data, media_type=media, headers=headers)
