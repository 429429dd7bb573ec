"""The one image "edit" all four emulators perform: real, cheap and deterministic.

The first input is tinted and framed (inside the mask's transparent area when a mask is
given; with a transparent background the frame is cut out instead), further inputs are
pasted as small thumbnails, and the result is fitted to the requested size and encoded
in the requested format. The same inputs always give the
same pixels, so tests can compare outputs. These functions block; callers run them in
a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

MAX_IMAGE_BYTES = 50 * 1024 * 1024
# Well under Pillow's decompression-bomb threshold (~89 Mpx), so that never fires first.
MAX_PIXELS = 40_000_000
INPUT_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
OUTPUT_FORMATS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "png": ("PNG", "image/png"),
        "jpeg": ("JPEG", "image/jpeg"),
        "webp": ("WEBP", "image/webp"),
    }
)
# One tint per output variant, so n > 1 yields visibly different images.
_TINTS = ((255, 140, 0), (0, 150, 255), (170, 60, 255), (20, 190, 90), (235, 40, 90))
_TINT_STRENGTH = 0.35
_MAX_THUMBNAILS = 4


class ImageError(ValueError):
    """An input that is not a usable image."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    has_alpha: bool


@dataclass(frozen=True)
class EditSpec:
    size: str = "auto"  # "auto" keeps the first input's size; otherwise "WIDTHxHEIGHT"
    output_format: str = "png"
    background: str = "auto"  # transparent | opaque | auto
    compression: int = 100  # jpeg/webp quality
    count: int = 1


@dataclass(frozen=True)
class EditedImage:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


def parse_size(size: str) -> tuple[int, int] | None:
    """``"1024x1536"`` -> (1024, 1536); ``"auto"`` -> None."""
    if size == "auto":
        return None
    width, _, height = size.partition("x")
    return int(width), int(height)


def _open(data: bytes, label: str) -> Image.Image:
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{label} is larger than 50 MB")
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in INPUT_FORMATS:
            raise ImageError(f"{label} must be a PNG, JPEG or WEBP image")
        if image.width * image.height > MAX_PIXELS:
            raise ImageError(f"{label} has too many pixels")
        image.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ImageError(f"{label} is not a valid image") from None
    return image


def inspect(data: bytes, label: str = "image") -> ImageInfo:
    """Check that bytes are a supported image and describe it (used to validate at submit)."""
    image = _open(data, label)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return ImageInfo(str(image.format), image.width, image.height, has_alpha)


def edit_images(
    sources: Sequence[bytes], spec: EditSpec, mask: bytes | None = None
) -> list[EditedImage]:
    if not sources:
        raise ImageError("at least one image is required")
    first = _open(sources[0], "image 1")
    had_alpha = first.mode in ("RGBA", "LA", "PA") or "transparency" in first.info
    base = first.convert("RGBA")
    target = parse_size(spec.size) or base.size
    base = ImageOps.fit(base, target, Image.Resampling.BILINEAR)
    editable = _editable_area(mask, target) if mask is not None else None
    thumbnails = [
        _open(data, f"image {index}").convert("RGBA")
        for index, data in enumerate(sources[1 : 1 + _MAX_THUMBNAILS], start=2)
    ]
    keep_alpha = _keeps_alpha(spec, had_alpha)
    # A transparent background is asked for: cut the frame out, so the alpha is real.
    cut_out = keep_alpha and spec.background == "transparent"
    return [
        _encode(
            _variant(base, editable, thumbnails, _TINTS[i % len(_TINTS)], cut_out), spec, keep_alpha
        )
        for i in range(spec.count)
    ]


def _editable_area(mask: bytes, size: tuple[int, int]) -> Image.Image:
    # OpenAI semantics: where the mask is fully transparent, the image may be edited.
    alpha = _open(mask, "mask").convert("RGBA").getchannel("A").resize(size)
    return alpha.point(lambda value: 255 if value == 0 else 0)


def _variant(
    base: Image.Image,
    editable: Image.Image | None,
    thumbnails: Sequence[Image.Image],
    tint: tuple[int, int, int],
    cut_out: bool,
) -> Image.Image:
    overlay = Image.new("RGBA", base.size, (*tint, 255))
    tinted = Image.blend(base, overlay, _TINT_STRENGTH)
    tinted.putalpha(base.getchannel("A"))
    result = tinted if editable is None else Image.composite(tinted, base, editable)
    width, height = result.size
    side = max(8, min(width, height) // 6)
    margin = max(2, side // 8)
    x = width - margin
    for thumbnail in thumbnails:
        small = ImageOps.fit(thumbnail, (side, side), Image.Resampling.BILINEAR)
        x -= side
        result.alpha_composite(small, (max(0, x), max(0, height - margin - side)))
        x -= margin
    border = max(2, min(width, height) // 32)
    frame = (0, 0, 0, 0) if cut_out else (*tint, 255)
    ImageDraw.Draw(result).rectangle((0, 0, width - 1, height - 1), outline=frame, width=border)
    return result


def _keeps_alpha(spec: EditSpec, had_alpha: bool) -> bool:
    if spec.output_format == "jpeg" or spec.background == "opaque":
        return False
    return spec.background == "transparent" or had_alpha


def _encode(image: Image.Image, spec: EditSpec, keep_alpha: bool) -> EditedImage:
    pil_format, content_type = OUTPUT_FORMATS[spec.output_format]
    if not keep_alpha:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image).convert("RGB")
    buffer = io.BytesIO()
    if pil_format == "PNG":
        image.save(buffer, "PNG", compress_level=3)
    else:
        image.save(buffer, pil_format, quality=max(1, min(spec.compression, 100)))
    extension = "jpg" if spec.output_format == "jpeg" else spec.output_format
    return EditedImage(buffer.getvalue(), content_type, extension, image.width, image.height)
