"""AtlasCloud (model ``openai/gpt-image-1/edit``): polled, or an Ed25519-signed webhook.

The input image is uploaded first (``POST /api/v1/model/uploadMedia``, multipart
``file``) and passed by its ``download_url``; ``POST /api/v1/model/generateImage``
answers ``{"code": 200, "data": {"id", "status"}}``, and ``GET
/api/v1/model/prediction/{id}`` reports starting -> processing -> completed | failed.

Quirks handled here:
- The model takes ONE image (``image`` is a single URL); more is refused before any call.
  One call makes one image: ``max_n`` is 1.
- No ``n``, ``background``, ``output_format`` or ``output_compression`` fields;
  ``quality`` is low|medium|high and ``size`` has no ``auto``, so "auto" means "leave it
  out".
- The upload answer comes in two documented shapes (``filename`` or ``file_name``, with
  or without the ``code`` envelope); only ``data.download_url`` is read.
- Right after the submit, the prediction GET answers 400/404 for a while: "pending"
  within ``not_found_grace`` seconds of acceptance (their ComfyUI client allows about
  30 s), after it the job is lost (``outcome_unknown``: it was accepted, so may be billed).
- Terminal statuses: completed|succeeded, and failed|timeout|canceled|cancelled|error,
  with ``error`` and sometimes ``error_code`` (1039 = moderation).
- Outputs come as ``outputs`` or ``output`` (their own tools read ``outputs || output``),
  a list or a single string; URLs, or raw base64 when base64 output was asked for.
- A webhook URL on a private, loopback or CGNAT host, not https, or over 1024 chars makes
  the submit a 400 and creates nothing: ``wants_callback`` asks for one only with a
  public https URL, and the task is polled otherwise.
- ``User-Agent`` is configurable (``HUB_ATLASCLOUD_USER_AGENT``): their starter app says a
  browser-like one passes Cloudflare's 1010 (unverified).
- The webhook is signed: ``X-AtlasCloud-Webhook-Signature-Ed25519`` (base64url, no
  padding) over ``"<X-AtlasCloud-Webhook-Timestamp>.<raw body>"``, by the key
  ``X-AtlasCloud-Webhook-Key-Id`` names in ``GET /api/v1/webhooks/jwks.json``.

Failure classification of the submit (``POST /api/v1/model/generateImage``), sent on a
fresh connection; see ``hub.providers.base.Resend``. The upload before it creates no
billable task (files are temporary), so its failures are SAFE:

=========================================  =======  ==================================
failure                                    resend   why
=========================================  =======  ==================================
connection refused, DNS, connect timeout   SAFE     nothing left the hub
429                                        SAFE     a refusal; no ``Retry-After`` [3P]
400 (bad input, a refused webhook URL),    NEVER    "no task is created" (Corrections,
401, 402, 403                                       webhooks URL rules); bad key
any 5xx                                    UNKNOWN  "POST requests must not be retried:
                                                    they may create billable tasks"
                                                    (Corrections, mcp-server
                                                    api-client.ts); no 5xx is
                                                    documented as unbilled
``code`` >= 500 inside a 200               UNKNOWN  the same
read timeout, cut mid-answer, a 2xx        UNKNOWN  the body was sent; a task may exist
without an id
=========================================  =======  ==================================

Polls and key-set fetches create nothing billed: transient failures are SAFE to repeat.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hub.net.addresses import is_public
from hub.providers.base import (
    CallbackRejected,
    EditRequest,
    ErrorCode,
    InputImage,
    Outcome,
    ProviderConfig,
    ProviderError,
)
from hub.providers.http import (
    MAX_IMAGE_BYTES,
    ProviderHTTP,
    any_output,
    header,
    is_http_url,
    load_json_object,
)

MODEL = "openai/gpt-image-1/edit"
JWKS_PATH = "/api/v1/webhooks/jwks.json"
SIGNATURE_TOLERANCE = 300.0
MAX_KEYS = 32
SUCCEEDED = frozenset({"completed", "succeeded"})
FAILED = frozenset({"failed", "timeout", "canceled", "cancelled", "error"})
# The prediction GET answers these while a just-accepted task is not visible yet.
WARMUP_STATUSES = (400, 404)
MAX_WEBHOOK_URL = 1024
# Names that never resolve to a public address.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".test")


def is_public_https(url: str) -> bool:
    """Whether AtlasCloud would take ``url`` as a webhook: https, at most 1024 chars, on a
    host that is not a private, loopback, link-local or CGNAT address or a local name.
    A name is not resolved here (no I/O in a predicate): a public-looking name that
    resolves privately is refused by Atlas with a 400, which is NEVER, so nothing is lost
    but the task."""
    if len(url) > MAX_WEBHOOK_URL:
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme != "https" or not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.rstrip(".").lower()
        return "." in name and name != "localhost" and not name.endswith(_LOCAL_SUFFIXES)
    return is_public(address)


class AtlasCloud:
    name = "atlascloud"
    supports_callback = True
    max_n = 1

    def __init__(
        self,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = ProviderHTTP(config, client, {"Authorization": f"Bearer {config.api_key}"})
        self._clock = clock
        self._grace = config.not_found_grace
        # The webhook keys by kid, fetched when first needed and again for an unknown kid.
        self._keys: dict[str, Ed25519PublicKey] = {}

    def wants_callback(self, public_url: str) -> bool:
        # Atlas refuses the whole submit for a webhook URL it would not call.
        return is_public_https(public_url)

    async def submit(self, request: EditRequest) -> Outcome:
        if len(request.images) != 1:
            raise self._http.error(f"{MODEL} edits exactly one image, got {len(request.images)}")
        payload: dict[str, object] = {
            "model": MODEL,
            "prompt": request.prompt,
            "image": await self._upload(request.images[0]),
        }
        if request.mask is not None:
            payload["mask_image"] = await self._upload(request.mask)
        if request.quality not in (None, "auto"):
            payload["quality"] = request.quality
        if request.size not in (None, "auto"):
            payload["size"] = request.size
        if request.callback_url is not None:
            payload["webhook_url"] = request.callback_url
        reply = await self._http.request(
            "POST", "/api/v1/model/generateImage", json=payload, submit=True
        )
        data = self._data(self._http.json_body(reply, submit=True), submit=True)
        prediction_id = data.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise self._http.unknown("answered the submit without a prediction id")
        status = str(data.get("status", "")).lower()
        if status in SUCCEEDED or status in FAILED:
            try:
                return _outcome(data, prediction_id)
            except ValueError as exc:
                raise self._http.unknown(str(exc)) from None
        return Outcome("pending", prediction_id, detail={"status": status or "starting"})

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        path = f"/api/v1/model/prediction/{quote(provider_task_id, safe='')}"
        reply = await self._http.request("GET", path, limit=MAX_IMAGE_BYTES, accept=WARMUP_STATUSES)
        if reply.status in WARMUP_STATUSES:
            if age is None or age <= self._grace:
                return Outcome("pending", provider_task_id, detail={"status": "warming_up"})
            error = (
                f"AtlasCloud still answers HTTP {reply.status} for the prediction "
                f"{age:.0f} s after accepting it; it may have charged for it"
            )
            return Outcome(
                "failed",
                provider_task_id,
                error=error,
                error_code=ErrorCode.OUTCOME_UNKNOWN,
                detail={"status": "not_found"},
            )
        data = self._data(self._http.json_body(reply))
        return self._read(data, provider_task_id)

    async def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str | None
    ) -> Outcome:
        # Atlas signs with its own key pair; the per-task ``secret`` plays no part.
        await self._verify(headers, body)
        value = load_json_object(body)
        payload = value.get("payload") if value is not None else None
        if value is None or not isinstance(payload, dict):
            raise CallbackRejected(
                "not an AtlasCloud webhook: no payload object", reason="unreadable"
            )
        session = value.get("session_id") or payload.get("id")
        task = session if isinstance(session, str) and session else None
        try:
            outcome = _outcome(payload, task)
        except ValueError as exc:
            raise CallbackRejected(
                f"unreadable AtlasCloud webhook: {exc}", reason="unreadable"
            ) from None
        if value.get("status") == "ERROR" and outcome.state != "failed":
            error = _error_text(value.get("error"), None) or "AtlasCloud reported an error"
            return Outcome("failed", task, error=error, detail=outcome.detail)
        if outcome.state == "pending":
            raise CallbackRejected("AtlasCloud webhook for an unfinished task", reason="unreadable")
        return outcome

    # -- helpers ---------------------------------------------------------------------

    async def _upload(self, image: InputImage) -> str:
        files = [("file", (image.filename, await image.load(), image.content_type))]
        body = await self._http.json("POST", "/api/v1/model/uploadMedia", files=files)
        data = body.get("data")
        url = (data if isinstance(data, dict) else body).get("download_url")
        if not isinstance(url, str) or not is_http_url(url):
            raise self._http.error("answered the upload without a download_url")
        return url

    def _data(self, body: dict[str, Any], *, submit: bool = False) -> dict[str, Any]:
        """The prediction inside the ``{"code", "data"}`` envelope (or an unwrapped one)."""
        data = body.get("data")
        if isinstance(data, dict):
            return data
        code = body.get("code")
        if isinstance(code, int) and code != 200:
            # An error reported inside a 200 answer: a 5xx there is as ambiguous as one
            # on the status line.
            message = body.get("message") or body.get("msg") or "no message"
            text = f"answered code {code}: {message}"
            if submit and code >= 500:
                raise self._http.unknown(text, status=code)
            raise self._http.error(text, status=code, retryable=code in (429,) or code >= 500)
        return body

    def _read(self, data: Mapping[str, Any], task_id: str) -> Outcome:
        try:
            return _outcome(data, task_id)
        except ValueError as exc:
            raise self._http.error(str(exc)) from None

    async def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        timestamp = header(headers, "X-AtlasCloud-Webhook-Timestamp")
        key_id = header(headers, "X-AtlasCloud-Webhook-Key-Id")
        signature = header(headers, "X-AtlasCloud-Webhook-Signature-Ed25519")
        if not timestamp or not key_id or not signature:
            raise CallbackRejected("the AtlasCloud webhook is not signed")
        try:
            sent_at = int(timestamp.strip())
            raw = base64.urlsafe_b64decode(signature.strip() + "=" * (-len(signature.strip()) % 4))
        except (ValueError, binascii.Error):
            raise CallbackRejected("the AtlasCloud webhook signature is malformed") from None
        key = await self._key(key_id.strip())
        try:
            key.verify(raw, timestamp.strip().encode() + b"." + body)
        except InvalidSignature:
            raise CallbackRejected("the AtlasCloud webhook signature does not match") from None
        if abs(self._clock() - sent_at) > SIGNATURE_TOLERANCE:
            raise CallbackRejected("the AtlasCloud webhook timestamp is too old (or in the future)")

    async def _key(self, key_id: str) -> Ed25519PublicKey:
        key = self._keys.get(key_id)
        if key is not None:
            return key
        # An unknown kid may be a rotated key: fetch the set once more, then give up.
        try:
            jwks = await self._http.json("GET", JWKS_PATH)
        except ProviderError as exc:
            # Not the sender's fault: answer so that a retrying sender tries again later.
            raise CallbackRejected(
                f"cannot verify now: {exc.message}", reason="unavailable"
            ) from None
        self._keys = _parse_jwks(jwks)
        key = self._keys.get(key_id)
        if key is None:
            raise CallbackRejected("the AtlasCloud webhook names an unknown signing key")
        return key

    async def cancel(self, provider_task_id: str) -> bool:
        return False


def _parse_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    entries = jwks.get("keys")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or len(keys) >= MAX_KEYS:
            continue
        kid, x = entry.get("kid"), entry.get("x")
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        if not isinstance(kid, str) or not isinstance(x, str):
            continue
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error):
            continue
    return keys


def _outcome(data: Mapping[str, Any], task_id: str | None) -> Outcome:
    """A prediction (poll data or webhook payload) as an Outcome; ValueError if unreadable."""
    status = str(data.get("status", "")).lower()
    detail: dict[str, object] = {"status": status}
    metrics = data.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("predict_time"), int | float):
        detail["predict_time"] = metrics["predict_time"]
    if status in SUCCEEDED:
        outputs = data.get("outputs")
        if outputs is None:
            outputs = data.get("output")
        items = outputs if isinstance(outputs, list) else [outputs]
        found = tuple(any_output(item) for item in items if isinstance(item, str) and item)
        if not found:
            return Outcome("failed", task_id, error="AtlasCloud returned no image", detail=detail)
        return Outcome("succeeded", task_id, outputs=found, detail=detail)
    if status in FAILED:
        error = _error_text(data.get("error"), data.get("error_code")) or f"the task {status}"
        return Outcome("failed", task_id, error=error, detail=detail)
    return Outcome("pending", task_id, detail=detail)


def _error_text(error: object, code: object) -> str | None:
    text = error.strip() if isinstance(error, str) else None
    if code not in (None, "", 0):
        return f"{text or 'the task failed'} (error_code {code})"
    return text or None
