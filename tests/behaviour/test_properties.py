"""Property tests: SSE framing round-trips through a parser written from the spec, tokens
round-trip and refuse any change, and id parsing never lets a bad value through."""

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.access.tokens import CALLBACK, WATCH, Claims, Signer
from hub.config.env import Secret
from hub.errors import HubError
from hub.streams import events
from hub.web.errors import status_of
from hub.web.query import MAX_INT, integer

NOW = 1_800_000_000
SIGNER = Signer((Secret("property-secret"),))
# What an SSE field name may be: no line breaks, no NUL (and so never a forged field).
names = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), min_size=1)


def parse(frame: bytes) -> dict[str, str]:
    """How the SSE spec reads one event: data lines joined by newlines."""
    assert frame.endswith(b"\n\n")
    fields: dict[str, list[str]] = {}
    for line in frame[:-2].decode().split("\n"):
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))
    return {name: "\n".join(values) for name, values in fields.items()}


@given(
    data=st.text(st.characters(codec="utf-8")),
    event=names,
    id=st.integers(0, MAX_INT),
)
def test_any_data_survives_framing(data, event, id):
    parsed = parse(events.encode(data, event=event, id=id))
    assert parsed["id"] == str(id)
    assert parsed["event"] == event
    # Line breaks of any kind come back as \n; nothing else changes.
    assert parsed["data"] == re.sub(r"\r\n|\r", "\n", data)


@given(bad=st.tuples(st.text(), st.sampled_from("\r\n\0"), st.text()).map(lambda t: "".join(t)))
def test_a_line_break_in_event_or_id_is_refused(bad):
    with pytest.raises(ValueError):
        events.encode(b"x", event=bad)
    with pytest.raises(ValueError):
        events.encode(b"x", id=bad)


ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@given(channel=ids, task=st.none() | ids, ttl=st.integers(1, 10**8))
def test_tokens_round_trip(channel, task, ttl):
    claims = Claims(channel, NOW + ttl, task_id=task)
    assert SIGNER.verify(CALLBACK, SIGNER.issue(CALLBACK, claims), now=NOW) == claims


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    channel=ids,
    position=st.integers(0, 10_000),
    replacement=st.characters(min_codepoint=33, max_codepoint=126),
)
def test_any_change_to_a_token_is_refused(channel, position, replacement):
    token = SIGNER.issue(WATCH, Claims(channel, NOW + 60))
    index = position % len(token)
    changed = token[:index] + replacement + token[index + 1 :]
    if changed == token:
        return
    with pytest.raises(HubError) as info:
        SIGNER.verify(WATCH, changed, now=NOW)
    assert status_of(info.value) == 401


@given(raw=st.text())
@example(raw="0\x1f")  # str.strip() removes it, int() did not skip it: once a 500
def test_id_parsing_accepts_only_plain_integers_in_range(raw):
    try:
        value = integer(raw, "Last-Event-ID", 0, MAX_INT)
    except HubError as exc:
        assert status_of(exc) == 422 and exc.message.startswith("Last-Event-ID:")
    else:
        assert re.fullmatch(r"\s*[0-9]{1,19}\s*", raw) and 0 <= value <= MAX_INT
