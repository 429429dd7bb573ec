"""What crosses between a task and its provider: the edit request built from the stored
input (images served at signed URLs, or loaded as bytes), and the outputs brought back as
blobs (base64 decoded once, URLs downloaded within bounds, since provider URLs expire)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import httpx
import orjson

from hub.access.tokens import CALLBACK, Claims, Signer
from hub.blobs import images, records
from hub.config.settings import Settings
from hub.net.fetch import fetch
from hub.providers.base import (
    EditRequest,
    ErrorCode,
    InputImage,
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
        if self.callback_wanted(provider):
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
            output_compression=spec.get("output_compression"),
            callback_url=callback_url,
            callback_secret=task.callback_secret,
        )

    def callback_wanted(self, provider: Provider) -> bool:
        """Whether the provider is handed a callback URL for its jobs (so a job whose
        submit answer was lost may still report)."""
        return provider.supports_callback and provider.wants_callback(self._settings.public_url)

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

    def hold(self, task: TaskRecord, outputs: tuple[Output, ...]) -> Held:
        """The outputs in order: bytes become blobs of the task's owner now (base64 is
        decoded once), URLs are kept to download."""
        held = Held()
        for output in outputs:
            if output.data is not None:
                for blob in _image_blob(task, output.data, output.content_type or ""):
                    held.blobs.append(blob)
                    held.entries.append({"blob_id": blob.id, "content_type": blob.content_type})
            elif output.url is not None:
                held.entries.append({"url": output.url})
        return held

    async def fetch(self, task: TaskRecord, entries: list[dict[str, str]]) -> Held:
        """``entries`` with every URL downloaded into a blob, in order (a download that is
        not an image the hub serves is left out). Raises FetchError for a download that
        fails (the caller tries again until the deadline)."""
        done = Held()
        for entry in entries:
            if "url" not in entry:
                done.entries.append(entry)
                continue
            data, content_type = await fetch(
                self._client,
                entry["url"],
                max_bytes=self._settings.max_image_bytes,
                within=OUTPUT_FETCH_SECONDS,
                allow_private=self._settings.loopback_allowed,
            )
            for blob in _image_blob(task, data, content_type):
                done.blobs.append(blob)
                done.entries.append({"blob_id": blob.id, "content_type": blob.content_type})
        return done


@dataclass
class Held:
    """A result's outputs, in the provider's order: each a blob the hub holds
    (``blob_id``, ``content_type``) or a URL still to download (``url``); and the blobs
    made for it that are not yet stored."""

    entries: list[dict[str, str]] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all("blob_id" in entry for entry in self.entries)

    def outputs_json(self) -> bytes:
        return orjson.dumps(self.entries)


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


@dataclass(frozen=True)
class Result:
    """A result kept on the task until its outputs are all held: ``short`` when it carries
    fewer than were asked for (a webhook with the first image only), so the provider is
    asked for the whole list before the task succeeds."""

    provider_task_id: str | None
    entries: list[dict[str, str]]
    short: bool = False
    cost_usd: float | None = None  # what the provider said the job cost, if it did

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"provider_task_id": self.provider_task_id, "outputs": self.entries,
             "short": self.short, "cost_usd": self.cost_usd}
        )  # fmt: skip

    @staticmethod
    def from_json(data: bytes) -> Result:
        raw = orjson.loads(data)
        # Kept before outputs were held in order: URLs only.
        entries = raw.get("outputs") or [{"url": url} for url in raw.get("urls", [])]
        cost = raw.get("cost_usd")
        figure = float(cost) if isinstance(cost, int | float) else None
        return Result(raw.get("provider_task_id"), entries, bool(raw.get("short")), figure)


def asked_n(task: TaskRecord) -> int:
    """How many images the task asked for."""
    n = orjson.loads(task.input).get("n")
    return n if isinstance(n, int) and n > 0 else 1
