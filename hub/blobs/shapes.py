"""The answer to ``POST /v1/uploads``: a blob to name as an input image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias

from msgspec import Struct

from hub.blobs.images import IMAGE_TYPES
from hub.shapes import BlobId, Count, Url

if TYPE_CHECKING:
    ImageType: TypeAlias = str
else:
    ImageType = Literal[tuple(IMAGE_TYPES.values())]


class Blob(Struct, forbid_unknown_fields=True):
    """An input image the hub holds: its id goes in a task's images."""

    id: BlobId
    url: Url
    content_type: ImageType
    size: Count
