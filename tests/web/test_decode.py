"""Bodies into shapes: a body that is not JSON is a 400 wherever it breaks; one that is
JSON but not the shape is a 422 naming the field (msgspec's path, as the hub writes
fields), with the reason in words after ``field:``."""

from typing import Annotated

import msgspec
import pytest
from msgspec import Meta, Struct

from hub.errors import Invalid, Malformed
from hub.inbox.shapes import ChannelRequest
from hub.tasks.shapes import TaskRequest
from hub.web.decode import convert, decode, field_of


class Inner(Struct, forbid_unknown_fields=True):
    n: Annotated[int, Meta(ge=1, le=10)] | None = None


class Outer(Struct, forbid_unknown_fields=True):
    items: list[Inner]
    name: str = ""


def refused(data: bytes, shape: type = Outer) -> Invalid:
    with pytest.raises(Invalid) as caught:
        decode(data, shape)
    error = caught.value
    assert error.code == "invalid_request"
    assert error.field is not None
    assert error.message.startswith(error.field + ": ")
    return error


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("$", "body"),
        ("$.input", "input"),
        ("$.input.images[0]", "input.images[0]"),
        ("$.webhook_urls[10]", "webhook_urls[10]"),
        ("$[2].x", "[2].x"),
    ],
)
def test_a_path_becomes_a_field(path, field):
    assert field_of(path) == field


def test_the_top_level_can_be_named_for_what_it_is():
    assert field_of("$", root="callback_url") == "callback_url"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{nope",
        b'{"name": "x",}',
        b"{} x",
        b'{"n": NaN}',
        b"\xef\xbb\xbf{}",
        b'{"name": "\xff"}',
        b'{"name": "a\x00b"}',
        b'{"name": 1e400}',
        b"[" * 5000 + b"]" * 5000,
        # A shape error before the syntax error is still not JSON: 400, not 422.
        b'{"name": 5, ',
        b'{"items": [{"n": 0}], "name": "\xff"}',
    ],
)
def test_a_body_that_is_not_json_is_400(data):
    with pytest.raises(Malformed) as caught:
        decode(data, Outer)
    assert caught.value.code == "bad_request"
    assert caught.value.message == "the body is not valid JSON"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (b"[]", "body", "must be a JSON object, not a list"),
        (b"null", "body", "must be a JSON object, not null"),
        (b"{}", "items", "is required"),
        (b'{"items": [], "nmae": 1}', "nmae", "unknown field"),
        (b'{"items": {}}', "items", "must be a list, not a JSON object"),
        (b'{"items": [{"m": 1}]}', "items[0].m", "unknown field"),
        (b'{"items": [{}, {"n": 0}]}', "items[1].n", "must be at least 1"),
        (b'{"items": [{"n": 11}]}', "items[0].n", "must be at most 10"),
        (b'{"items": [{"n": 1.5}]}', "items[0].n", "must be an integer or null, not a number"),
        (b'{"items": [{"n": true}]}', "items[0].n", "must be an integer or null, not a boolean"),
        (b'{"items": [], "name": 3}', "name", "must be a string, not an integer"),
    ],
)
def test_a_body_not_of_the_shape_is_422_naming_the_field(data, field, reason):
    error = refused(data)
    assert (error.field, error.message) == (field, f"{field}: {reason}")


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"label": "x" * 201}, "label", "must be at most 200 characters long"),
        ({"label": "a\x00b"}, "label", "must not contain NUL"),
        ({"webhook_urls": ["http://x.test/"] * 11}, "webhook_urls", "must hold at most 10 items"),
    ],
)
def test_the_hubs_own_shapes_say_why_in_words(body, field, reason):
    error = refused(msgspec.json.encode(body), ChannelRequest)
    assert error.message == f"{field}: {reason}"


@pytest.mark.parametrize(
    ("input_", "field", "reason"),
    [
        ({"prompt": " \t", "images": ["x"]}, "input.prompt", "must not be blank or contain NUL"),
        ({"prompt": "p", "images": []}, "input.images", "must hold at least 1 item"),
        ({"prompt": "p", "images": [""]}, "input.images[0]", "must be at least 1 character long"),
        (
            {"prompt": "p", "images": ["x"], "quality": "ultra"},
            "input.quality",
            "must be one of auto, high, low, medium",
        ),
    ],
)
def test_a_task_requests_refusals(input_, field, reason):
    body = {"provider": "segmind", "input": input_}
    error = refused(msgspec.json.encode(body), TaskRequest)
    assert error.message == f"{field}: {reason}"


def test_an_unknown_choice_lists_the_choices_not_the_value():
    error = refused(msgspec.json.encode({"provider": "x" * 1000, "input": {}}), TaskRequest)
    assert error.message == "provider: must be one of acedata, atlascloud, eachlabs, segmind"
    # Several, to try in order: each is one of them too.
    error = refused(msgspec.json.encode({"provider": ["segmind", "x"], "input": {}}), TaskRequest)
    assert error.message == "provider[1]: must be one of acedata, atlascloud, eachlabs, segmind"
    error = refused(b'{"provider": 5, "input": {}}', TaskRequest)
    assert error.message == "provider: must be a string or a list, not an integer"


def test_a_good_body_is_its_shape():
    assert decode(b'{"items": [{"n": 2}, {}]}', Outer) == Outer([Inner(2), Inner()])


def test_convert_checks_python_data_the_same_way():
    assert convert({"items": []}, Outer) == Outer([])
    with pytest.raises(Invalid) as caught:
        convert({"items": [{"n": "2"}]}, Outer)
    assert caught.value.field == "items[0].n"
    with pytest.raises(Invalid) as caught:
        convert(5, str, root="callback_url")
    assert caught.value.message == "callback_url: must be a string, not an integer"
