import pytest

from hub.access.tokens import CALLBACK, MAX_TOKEN_LENGTH, WATCH, Claims, Signer
from hub.config.env import Secret
from hub.errors import HubError
from hub.web.errors import status_of

NOW = 1_800_000_000


def signer(*keys: str) -> Signer:
    return Signer(tuple(Secret(k) for k in keys))


def test_round_trip_keeps_the_claims():
    s = signer("k1")
    token = s.issue(CALLBACK, Claims("ch_1", NOW + 60, task_id="task_9"))
    assert s.verify(CALLBACK, token, now=NOW) == Claims("ch_1", NOW + 60, "task_9")


def test_expired_token_is_410_not_401():
    s = signer("k1")
    token = s.issue(CALLBACK, Claims("ch_1", NOW))
    with pytest.raises(HubError) as info:
        s.verify(CALLBACK, token, now=NOW)
    assert (status_of(info.value), info.value.code) == (410, "expired_token")


def test_tampered_token_is_401_even_when_expired():
    s = signer("k1")
    token = s.issue(CALLBACK, Claims("ch_1", NOW - 100))
    payload, signature = token.rsplit(".", 1)
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    with pytest.raises(HubError) as info:
        s.verify(CALLBACK, forged, now=NOW)
    assert status_of(info.value) == 401


def test_another_secret_is_401():
    token = signer("k1").issue(CALLBACK, Claims("ch_1", NOW + 60))
    with pytest.raises(HubError) as info:
        signer("k2").verify(CALLBACK, token, now=NOW)
    assert status_of(info.value) == 401


def test_purposes_do_not_mix():
    s = signer("k1")
    watch = s.issue(WATCH, Claims("ch_1", NOW + 60))
    with pytest.raises(HubError) as info:
        s.verify(CALLBACK, watch, now=NOW)
    assert status_of(info.value) == 401


def test_rotation_new_key_signs_old_key_still_verifies():
    old = signer("old").issue(CALLBACK, Claims("ch_1", NOW + 60))
    rotated = signer("new", "old")
    assert rotated.verify(CALLBACK, old, now=NOW).channel_id == "ch_1"
    fresh = rotated.issue(CALLBACK, Claims("ch_2", NOW + 60))
    # Signed with the newest key: verifiable by a signer that only knows "new".
    assert signer("new").verify(CALLBACK, fresh, now=NOW).channel_id == "ch_2"
    with pytest.raises(HubError):
        signer("old").verify(CALLBACK, fresh, now=NOW)


@pytest.mark.parametrize("garbage", ["", ".", "abc", "a.b.c", "x" * (MAX_TOKEN_LENGTH + 1), "é.é"])
def test_garbage_is_401(garbage):
    with pytest.raises(HubError) as info:
        signer("k1").verify(CALLBACK, garbage, now=NOW)
    assert status_of(info.value) == 401


def test_a_signer_needs_a_key():
    with pytest.raises(ValueError):
        Signer(())


def test_a_cached_token_still_expires():
    s = signer("k1")
    token = s.issue(CALLBACK, Claims("ch_1", NOW + 10))
    assert s.verify(CALLBACK, token, now=NOW).channel_id == "ch_1"  # now cached
    with pytest.raises(HubError) as info:
        s.verify(CALLBACK, token, now=NOW + 10)
    assert status_of(info.value) == 410


def test_a_cached_token_is_only_good_for_its_purpose():
    s = signer("k1")
    token = s.issue(WATCH, Claims("ch_1", NOW + 60))
    s.verify(WATCH, token, now=NOW)
    with pytest.raises(HubError):
        s.verify(CALLBACK, token, now=NOW)
