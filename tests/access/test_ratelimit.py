import pytest

from hub.access.ratelimit import RateLimit
from hub.errors import HubError
from hub.web.errors import headers_of, status_of
from tests.helpers import AUTH, OTHER_AUTH


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_one_seconds_worth_then_429_with_retry_after():
    clock = Clock()
    limit = RateLimit(5, "API key", clock=clock)
    for _ in range(5):
        limit.check("k")
    with pytest.raises(HubError) as info:
        limit.check("k")
    assert status_of(info.value) == 429 and info.value.code == "rate_limited"
    assert headers_of(info.value) == {"retry-after": "1"}
    clock.now += 0.2  # one token back
    limit.check("k")
    with pytest.raises(HubError):
        limit.check("k")


def test_keys_have_buckets_of_their_own():
    limit = RateLimit(1, "API key", clock=Clock())
    limit.check("a")
    with pytest.raises(HubError):
        limit.check("a")
    limit.check("b")


def test_zero_turns_it_off():
    limit = RateLimit(0, "API key", clock=Clock())
    for _ in range(10_000):
        limit.check("k")


def test_the_table_is_bounded():
    limit = RateLimit(1, "API key", clock=Clock(), max_buckets=100)
    for key in range(1000):
        limit.check(key)
    assert len(limit._buckets) == 100


@pytest.fixture
def settings(make_settings):
    return make_settings(rate_limit_per_key=3, rate_limit_per_callback=2)


async def test_a_flood_on_one_key_does_not_starve_another(client):
    statuses = [(await client.post("/v1/channels", headers=AUTH)).status_code for _ in range(5)]
    assert statuses[:3] == [201, 201, 201] and statuses[3:] == [429, 429]
    limited = await client.get("/v1/channels/ch_" + "0" * 24, headers=AUTH)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert (await client.post("/v1/channels", headers=OTHER_AUTH)).status_code == 201


async def test_a_flood_on_one_callback_url_does_not_stop_another(client):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    other = (await client.post("/v1/channels", headers=OTHER_AUTH)).json()
    statuses = [
        (await client.post(channel["callback_url"], json={"n": n})).status_code for n in range(4)
    ]
    assert statuses == [200, 200, 429, 429]
    assert (await client.post(other["callback_url"], json={"n": 0})).status_code == 200
    # A forged URL is refused before it can take (or make) a bucket.
    forged = channel["callback_url"][:-3] + "xyz"
    assert (await client.post(forged, json={})).status_code == 401


async def test_rewritten_spellings_of_a_callback_token_are_refused_not_counted_apart(client):
    """Was: 300 variants of one token (a non-ASCII character in its signature, padding,
    a changed last character) gave 300 x 200 where the token itself was held to its rate."""
    from tests.access.test_tokens import variants

    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    base, _, token = channel["callback_url"].rpartition("/")
    statuses = [
        (await client.post(f"{base}/{variant}", json={"n": n})).status_code
        for n, variant in enumerate(variants(token, 300))
    ]
    # A "/" makes it another path (404); every other spelling is not a token (401).
    assert set(statuses) <= {401, 404} and statuses.count(401) > 250
    # The token itself is still held to its rate (2 a second here).
    own = [(await client.post(f"{base}/{token}", json={"n": n})).status_code for n in range(4)]
    assert own == [200, 200, 429, 429]
