from io import BytesIO

import pytest
from PIL import Image

from hub.blobs import images
from hub.errors import HubError
from hub.web.errors import status_of


def encoded(fmt: str, size=(4, 4)) -> bytes:
    out = BytesIO()
    Image.new("RGB", size).save(out, fmt)
    return out.getvalue()


def test_sniff_knows_the_three_output_formats_by_their_first_bytes():
    assert images.sniff(encoded("PNG")) == "image/png"
    assert images.sniff(encoded("JPEG")) == "image/jpeg"
    assert images.sniff(encoded("WEBP")) == "image/webp"
    assert images.sniff(b"GIF89a") is None
    assert images.sniff(b"") is None


@pytest.mark.parametrize(
    ("fmt", "expected"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
async def test_image_type_accepts_what_providers_take(fmt, expected):
    assert await images.image_type(encoded(fmt), "file") == expected


@pytest.mark.parametrize("data", [b"", b"hello", encoded("PNG")[:20], encoded("GIF")])
async def test_image_type_refuses_the_rest_naming_the_field(data):
    with pytest.raises(HubError) as info:
        await images.image_type(data, "input.images[3]")
    assert status_of(info.value) == 422 and info.value.message.startswith("input.images[3]:")


async def test_image_type_refuses_decompression_bombs():
    # A tiny file claiming an enormous canvas.
    with pytest.raises(HubError):
        await images.image_type(encoded("PNG", size=(9000, 9000)), "file")
