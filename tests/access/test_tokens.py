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


def variants(token: str, count: int) -> list[str]:
    """Other spellings of ``token`` that a lenient base64 decoder reads the same (or
    nearly): a non-ASCII character slipped into the signature, padding added, the last
    character of a segment changed in the bits base64 does not use, a stray character."""
    # A compressed payload is marked with a leading dot, kept on every variant.
    mark = "." if token.startswith(".") else ""
    payload, _, signature = token.removeprefix(".").partition(".")
    payload = mark + payload
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    found: list[str] = []
    for i in range(len(signature) + 1):
        for extra in ("é", "\u200b", "=", "+", "/", "~"):
            found.append(f"{payload}.{signature[:i]}{extra}{signature[i:]}")
    for pad in ("=", "==", "==="):
        found += [f"{payload}.{signature}{pad}", f"{payload}{pad}.{signature}"]
    for part, keep in ((signature, payload), (payload, signature)):
        for replacement in alphabet:
            if replacement != part[-1]:
                changed = part[:-1] + replacement
                found.append(f"{keep}.{changed}" if part is signature else f"{changed}.{keep}")
    assert len(found) >= count
    return found[:count]


def test_only_the_canonical_spelling_of_a_token_verifies():
    s = signer("k1")
    token = s.issue(CALLBACK, Claims("ch_1", NOW + 60))
    assert s.verify(CALLBACK, token, now=NOW) == Claims("ch_1", NOW + 60)
    refused = 0
    for variant in variants(token, 300):
        with pytest.raises(HubError) as info:
            s.verify(CALLBACK, variant, now=NOW)
        assert status_of(info.value) == 401
        refused += 1
    assert refused == 300


def test_the_url_digest_is_what_the_token_grants_not_its_spelling():
    old, new = signer("k-old"), signer("k-new", "k-old")
    claims = Claims("ch_1", NOW + 60)
    first, second = old.issue(CALLBACK, claims), new.issue(CALLBACK, claims)
    assert first != second
    assert (
        new.verify(CALLBACK, first, now=NOW).digest()
        == new.verify(CALLBACK, second, now=NOW).digest()
    )
    assert Claims("ch_2", NOW + 60).digest() != claims.digest()
