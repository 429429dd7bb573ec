import pytest

from hub.formats import iso
from hub.store.base import Event
from hub.streams import events


def test_frame_has_id_event_and_data():
    assert events.encode(b'{"a":1}', event="x.y", id=7) == b'id: 7\nevent: x.y\ndata: {"a":1}\n\n'


def test_line_breaks_in_data_become_several_data_lines():
    frame = events.encode("one\ntwo\r\nthree\rfour", event="t")
    assert frame == b"event: t\ndata: one\ndata: two\ndata: three\ndata: four\n\n"


def test_empty_data_is_one_empty_data_line():
    assert events.encode(b"") == b"data: \n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_event_name_and_id_cannot_carry_line_breaks(bad):
    with pytest.raises(ValueError):
        events.encode(b"x", event=bad)
    with pytest.raises(ValueError):
        events.encode(b"x", id=bad)
    with pytest.raises(ValueError):
        events.comment(bad)


def test_comment_and_retry():
    assert events.comment() == b": \n\n"
    assert events.comment("ping") == b": ping\n\n"
    assert events.retry(2000) == b"retry: 2000\n\n"


def test_event_frame_is_encoded_once_and_reused():
    event = Event(3, "callback.received", b'{"k":"v"}', channel_id="ch")
    first = events.frame(event)
    assert first == b'id: 3\nevent: callback.received\ndata: {"k":"v"}\n\n'
    assert events.frame(event) is first


def test_iso_timestamps_are_utc_with_milliseconds():
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1_790_000_000.1234) == "2026-09-21T14:13:20.123Z"


def test_iso_is_right_across_seconds_and_cache_entries():
    from datetime import UTC, datetime

    for t in (1_790_000_000.999, 1_790_000_001.0, 1_790_000_001.5, 0.5, 1_893_456_000.25):
        expected = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
        assert iso(t) == expected.replace("+00:00", "Z")
