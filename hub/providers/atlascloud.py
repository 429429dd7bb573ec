"""AtlasCloud (model ``openai/gpt-image-1/edit``): polled, or an Ed25519-signed webhook.

The input image is uploaded first (``POST /api/v1/model/uploadMedia``, multipart
``file``) and passed by its ``download_url``; ``POST /api/v1/model/generateImage``
answers ``{"code": 200, "data": {"id", "status"}}``, and ``GET
/api/v1/model/prediction/{id}`` reports starting -> processing -> completed | failed.

Quirks handled here:
- The model takes ONE image (``image`` is a single URL); more is refused before any call.
- No ``n``, ``background`` or ``output_format`` fields; ``quality`` is low|medium|high
  and ``size`` has no ``auto``, so "auto" means "leave it out".
- The upload answer comes in two documented shapes (``filename`` or ``file_name``, with
  or without the ``code`` envelope); only ``data.download_url`` is read.
- Right after the submit, the prediction GET answers 400/404 for up to ~30 s: that is
  "pending", not an error (the official ComfyUI client's "warm-up grace").
- Terminal statuses: completed|succeeded, and failed|timeout|canceled|cancelled|error,
  with ``error`` and sometimes ``error_code`` (1039 = moderation).
- Outputs are URLs, or raw base64 strings when base64 output was asked for.
- Webhooks must be https on a public host, else the submit itself gets a 400.
- The webhook is signed: ``X-AtlasCloud-Webhook-Signature-Ed25519`` (base64url, no
  padding) over ``"<X-AtlasCloud-Webhook-Timestamp>.<raw body>"``, by the key
  ``X-AtlasCloud-Webhook-Key-Id`` names in ``GET /api/v1/webhooks/jwks.json``.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hub.providers.base import (
    CallbackRejected,
    EditRequest,
    InputImage,
    Outcome,
    Output,
    ProviderConfig,
    ProviderError,
)
from hub.providers.http import (
    MAX_IMAGE_BYTES,
    ProviderHTTP,
    base64_output,
    header,
    is_http_url,
    load_json_object,
    url_output,
)

MODEL = "openai/gpt-image-1/edit"
JWKS_PATH = "/api/v1/webhooks/jwks.json"
SIGNATURE_TOLERANCE = 300.0
MAX_KEYS = 32
SUCCEEDED = frozenset({"completed", "succeeded"})
FAILED = frozenset({"failed", "timeout", "canceled", "cancelled", "error"})
# The prediction GET answers these while a just-accepted task is not visible yet.
WARMUP_STATUSES = (400, 404)


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
        # The webhook keys by kid, fetched when first needed and again for an unknown kid.
        self._keys: dict[str, Ed25519PublicKey] = {}

    def wants_callback(self, public_url: str) -> bool:
        # Atlas refuses the whole submit for a webhook URL that is not https.
        return public_url.startswith("https://")

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
        data = self._data(
            await self._http.json("POST", "/api/v1/model/generateImage", json=payload)
        )
        prediction_id = data.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise self._http.error("answered the submit without a prediction id")
        status = str(data.get("status", "")).lower()
        if status in SUCCEEDED or status in FAILED:
            return self._read(data, prediction_id)
        return Outcome("pending", prediction_id, detail={"status": status or "starting"})

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        path = f"/api/v1/model/prediction/{quote(provider_task_id, safe='')}"
        reply = await self._http.request("GET", path, limit=MAX_IMAGE_BYTES, accept=WARMUP_STATUSES)
        if reply.status in WARMUP_STATUSES:
            return Outcome("pending", provider_task_id, detail={"status": "warming_up"})
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

    def _data(self, body: dict[str, Any]) -> dict[str, Any]:
        """The prediction inside the ``{"code", "data"}`` envelope (or an unwrapped one)."""
        data = body.get("data")
        if isinstance(data, dict):
            return data
        code = body.get("code")
        if isinstance(code, int) and code != 200:
            # An error reported inside a 200 answer.
            message = body.get("message") or body.get("msg") or "no message"
            raise self._http.error(f"answered code {code}: {message}", status=code)
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
        items = outputs if isinstance(outputs, list) else []
        found = tuple(_output(item) for item in items if isinstance(item, str) and item)
        if not found:
            return Outcome("failed", task_id, error="AtlasCloud returned no image", detail=detail)
        return Outcome("succeeded", task_id, outputs=found, detail=detail)
    if status in FAILED:
        error = _error_text(data.get("error"), data.get("error_code")) or f"the task {status}"
        return Outcome("failed", task_id, error=error, detail=detail)
    return Outcome("pending", task_id, detail=detail)


def _output(item: str) -> Output:
    return url_output(item) if is_http_url(item) else base64_output(item)


def _error_text(error: object, code: object) -> str | None:
    text = error.strip() if isinstance(error, str) else None
    if code not in (None, "", 0):
        return f"{text or 'the task failed'} (error_code {code})"
    return text or None
