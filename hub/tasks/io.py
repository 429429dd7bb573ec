"""What crosses between a task and its provider: the edit request built from the stored
input (images served at signed URLs, or loaded as bytes), and the outputs brought back as
blobs (base64 decoded once, URLs downloaded within bounds, since provider URLs expire)."""

from __future__ import annotations

import logging
import time

import httpx
import orjson

from hub.access.tokens import CALLBACK, Claims, Signer
from hub.blobs import images, records
from hub.config.settings import Settings
from hub.errors import Invalid
from hub.net.fetch import fetch
from hub.providers.base import (
    EditRequest,
    ErrorCode,
    InputImage,
    Outcome,
    Output,
    Provider,
    ProviderError,
    Resend,
)
from hub.store.base import Blob, Store, TaskRecord

log = logging.getLogger("hub.tasks")

OUTPUT_FETCH_SECONDS = 60.0
# Signed URLs outlive the task by this much, so a provider that fetches late still can.
URL_GRACE_SECONDS = 3600


class TaskIO:
    def __init__(
        self, settings: Settings, store: Store, signer: Signer, client: httpx.AsyncClient
    ) -> None:
        self._settings = settings
        self._store = store
        self._signer = signer
        self._client = client

    async def edit_request(self, task: TaskRecord, provider: Provider) -> EditRequest:
        spec = orjson.loads(task.input)
        ttl = int(task.deadline - time.time()) + URL_GRACE_SECONDS
        images = []
        for index, blob_id in enumerate(spec["images"]):
            images.append(await self._input_image(blob_id, f"image-{index + 1}", ttl))
        mask = await self._input_image(spec["mask"], "mask", ttl) if spec.get("mask") else None
        callback_url = None
        public = self._settings.public_url
        if provider.supports_callback and provider.wants_callback(public):
            claims = Claims(None, int(task.deadline) + URL_GRACE_SECONDS, task_id=task.id)
            callback_url = f"{public}/callbacks/{self._signer.issue(CALLBACK, claims)}"
        return EditRequest(
            task_id=task.id,
            prompt=spec["prompt"],
            images=tuple(images),
            mask=mask,
            size=spec.get("size"),
            quality=spec.get("quality"),
            background=spec.get("background"),
            output_format=spec.get("output_format"),
            n=spec.get("n"),
            callback_url=callback_url,
            callback_secret=task.callback_secret,
        )

    async def _input_image(self, blob_id: str, name: str, ttl: int) -> InputImage:
        blob = await self._store.get_blob(blob_id)
        if blob is None:
            raise ProviderError(
                f"input image {blob_id} is no longer kept",
                resend=Resend.NEVER,
                code=ErrorCode.INVALID_INPUT,
            )
        store = self._store

        async def load() -> bytes:
            found = await store.get_blob(blob_id)
            return found.data if found is not None else b""

        return InputImage(
            blob_id=blob.id,
            content_type=blob.content_type,
            filename=f"{name}.{images.EXTENSIONS.get(blob.content_type, 'png')}",
            url=records.public_url(self._signer, self._settings.public_url, blob.id, ttl),
            load=load,
        )

    async def store_outputs(self, task: TaskRecord, outputs: tuple[Output, ...]) -> list[Blob]:
        """Every output as a blob of the task's owner. Raises FetchError for a download
        that fails (the caller retries it until the deadline)."""
        stored = []
        for output in outputs:
            if output.data is not None:
                stored.extend(_image_blob(task, output.data, output.content_type or ""))
            elif output.url is not None:
                data, content_type = await fetch(
                    self._client,
                    output.url,
                    max_bytes=self._settings.max_image_bytes,
                    within=OUTPUT_FETCH_SECONDS,
                    allow_private=self._settings.loopback_allowed,
                )
                stored.extend(_image_blob(task, data, content_type))
        return stored

    def decoded(self, task: TaskRecord, outputs: tuple[Output, ...]) -> list[Blob]:
        """Outputs that came as bytes in a callback, as blobs: only those that are PNG,
        JPEG or WebP. None of them one: the callback is refused (422) and changes
        nothing, rather than the task succeeding with no image; the task is then
        finished by polling, which fails it as having returned no image."""
        made = []
        for output in outputs:
            assert output.data is not None
            made.extend(_image_blob(task, output.data, output.content_type or ""))
        if outputs and not made:
            raise Invalid("invalid_output", "the callback's images are not PNG, JPEG or WebP")
        return made


def _image_blob(task: TaskRecord, data: bytes, claimed: str) -> list[Blob]:
    """The output as a blob if its bytes are an image the hub serves, typed as sniffed.

    Never stored as the type its sender claims: an ``image/svg+xml`` output holding a
    script ran in the hub's origin when opened. A task whose outputs are all refused fails
    as having returned no image."""
    kind = images.sniff(data)
    if kind is None:
        log.warning(
            "task %s: an output refused: not a PNG, JPEG or WebP image (sent as %s)",
            task.id, claimed.split(";")[0].strip() or "no type",
        )  # fmt: skip
        return []
    return [records.make(task.owner, data, kind)]


def outcome_to_json(outcome: Outcome) -> bytes:
    """An outcome whose outputs are still to be downloaded, kept on the task meanwhile
    (only URL outputs wait: bytes are stored as blobs at once)."""
    return orjson.dumps(
        {
            "state": outcome.state,
            "provider_task_id": outcome.provider_task_id,
            "urls": [o.url for o in outcome.outputs if o.url is not None],
            "error": outcome.error,
        }
    )


def outcome_from_json(data: bytes) -> Outcome:
    raw = orjson.loads(data)
    return Outcome(
        state=raw["state"],
        provider_task_id=raw.get("provider_task_id"),
        outputs=tuple(Output(url=u) for u in raw.get("urls", [])),
        error=raw.get("error"),
    )
