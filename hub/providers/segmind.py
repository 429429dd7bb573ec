"""Segmind (``gpt-image-1-edit``, v1): one synchronous call that answers with the image.

``POST /v1/gpt-image-1-edit`` holds the request for about a minute and answers with the
raw image bytes (not JSON), with accounting in ``x-*`` headers. The hub makes this call
from a background worker, so the wait never sits in a client's request.

Quirks handled here:
- The key goes in ``x-api-key`` only; the gateway refuses it as a Bearer token.
- ``image_urls`` is an array of URLs; ``mask`` is a URL, documented as required and sent
  as ``null`` in every example: ``"mask": null`` when there is none (Corrections).
- ``background`` takes only transparent|opaque: "auto" is left out.
  ``output_compression`` (1-100) is passed; 0 is sent as 1, its nearest allowed value.
- One call makes one image (v1 answers with the image itself): ``max_n`` is 1.
- The seed's sample calls ``response.json()``; that is a template error, the body is
  the image. Its type comes from the response's Content-Type (checked against the bytes).
- Errors are ``{"error": "..."}``, except 405, which the gateway answers in HTML;
  406 is "Insufficient credits" or a spend limit; 429 carries no Retry-After.
- Limits: 5/min on the free plan, 50/min on Pro [SG3] (the hub's default is 5).
- There are no inference webhooks and v1 has no status endpoint.
- What the call cost is the ``x-cost`` header [SG2] (v2 puts the same figure in the
  result's ``metrics.cost``; this adapter speaks v1 only). No page states its unit; it is
  read as USD, the currency the model page prices the call in ("~$0.14", the seed) and
  credits are bought in. It becomes ``detail["cost_usd"]`` (``hub.providers.costs``: a
  figure that is not a sane number is dropped).

Failure classification of the one call (``POST /v1/gpt-image-1-edit``), sent on a fresh
connection; see ``hub.providers.base.Resend``. "Only 200 responses are billed, and a 200
that completes after the caller gave up is still billed" (Corrections):

=========================================  =======  ==================================
failure                                    resend   why
=========================================  =======  ==================================
connection refused, DNS, connect timeout   SAFE     nothing left the hub
429                                        SAFE     not a 200: not billed
400, 401, 403, 404, 405, 406, 410          NEVER    bad input, bad key, credits (406)
500, 502                                   SAFE     not a 200: not billed ("only 200
                                                    responses are billed", [SG2])
504                                        UNKNOWN  the gateway gave up waiting; the
                                                    edit behind it may still complete,
                                                    and that 200 is billed
read timeout, cut mid-answer               UNKNOWN  the edit may complete after the
                                                    hub stopped waiting: billed
a 200 that is not an image                 UNKNOWN  a 200 is billed
=========================================  =======  ==================================
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from hub.blobs.images import sniff
from hub.providers.base import (
    CallbackRejected,
    EditRequest,
    ErrorCode,
    Outcome,
    Output,
    ProviderConfig,
    ProviderError,
    Resend,
)
from hub.providers.costs import with_cost
from hub.providers.http import MAX_IMAGE_BYTES, ProviderHTTP

EDIT_PATH = "/v1/gpt-image-1-edit"
# A 5xx the gateway answers itself before any edit ran; a 504 may leave one running.
UNBILLED_5XX = frozenset({500, 502, 503})


def _unbilled(status: int, body: bytes) -> bool:
    return status in UNBILLED_5XX


BACKGROUNDS = ("transparent", "opaque")
# Accounting headers worth keeping with the task.
_DETAIL_HEADERS = {
    "x-cost": "cost",
    "x-generation-time": "generation_time",
    "x-remaining-credits": "remaining_credits",
}


class Segmind:
    name = "segmind"
    supports_callback = False
    max_n = 1

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        # The call lasts about a minute: ProviderHTTP applies config.request_timeout to it.
        self._http = ProviderHTTP(config, client, {"x-api-key": config.api_key}, unbilled=_unbilled)

    def wants_callback(self, public_url: str) -> bool:
        return False

    async def submit(self, request: EditRequest) -> Outcome:
        payload: dict[str, object] = {
            "image_urls": [image.url for image in request.images],
            "prompt": request.prompt,
            # Every documented example sends the key with null.
            "mask": request.mask.url if request.mask is not None else None,
        }
        if request.output_compression is not None:
            payload["output_compression"] = max(1, min(100, request.output_compression))
        if request.background in BACKGROUNDS:
            payload["background"] = request.background
        options = {
            "output_format": request.output_format,
            "quality": request.quality,
            "size": request.size,
        }
        payload.update({key: value for key, value in options.items() if value is not None})
        reply = await self._http.request(
            "POST", EDIT_PATH, json=payload, limit=MAX_IMAGE_BYTES, submit=True
        )
        sniffed = sniff(reply.content)
        declared = reply.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if sniffed is None:
            raise self._http.unknown(
                f"answered HTTP {reply.status} without an image (Content-Type {declared or '-'})"
            )
        content_type = declared if declared.startswith("image/") else sniffed
        headers = reply.headers
        detail: dict[str, object] = {
            field: headers[name] for name, field in _DETAIL_HEADERS.items() if name in headers
        }
        return Outcome(
            "succeeded",
            provider_task_id=reply.headers.get("x-request-id"),
            outputs=(Output(data=reply.content, content_type=content_type),),
            detail=with_cost(detail, headers.get("x-cost"), text=True),
        )

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        raise ProviderError(
            "segmind: the v1 API answers synchronously and has no status endpoint to poll",
            resend=Resend.NEVER,
            code=ErrorCode.PROVIDER_REFUSED,
        )

    async def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str | None
    ) -> Outcome:
        raise CallbackRejected(
            "Segmind sends no callbacks for model inference", reason="unreadable"
        )

    async def cancel(self, provider_task_id: str) -> bool:
        return False
