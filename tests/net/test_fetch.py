"""Fetching user-chosen URLs: a resolver stub stands in for DNS, a mock transport for the
network, so nothing here connects anywhere."""

import httpx
import pytest

from hub.net.fetch import FetchError, fetch

PUBLIC = "93.184.216.34"


def resolver(*answers: list[str]):
    """Answers each lookup with the next list (the last one repeats)."""
    calls = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return answers[min(len(calls) - 1, len(answers) - 1)]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def get(url, handler, resolve, **kwargs):
    async with client(handler) as c:
        return await fetch(c, url, max_bytes=1000, within=5, resolver=resolve, **kwargs)


async def test_the_request_goes_to_the_address_that_was_checked():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"img", headers={"content-type": "image/png"})

    # A rebinding name: public when checked, private on any later lookup.
    data, kind = await get(
        "https://images.example:8443/a.png?x=1", handler, resolver([PUBLIC], ["10.0.0.1"])
    )
    assert (data, kind) == (b"img", "image/png")
    [request] = seen
    assert request.url.host == PUBLIC and request.url.port == 8443 and request.url.path == "/a.png"
    assert request.headers["host"] == "images.example:8443"
    assert request.extensions["sni_hostname"] == "images.example"


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.7"],
        [PUBLIC, "127.0.0.1"],
        ["169.254.169.254"],
        ["::1"],
        ["::ffff:192.168.1.1"],
        ["fd00::1"],
        ["224.0.0.1"],
    ],
)
async def test_any_private_answer_refuses_before_any_connection(addresses):
    def handler(request):
        raise AssertionError("must not connect")

    with pytest.raises(FetchError, match="private or reserved"):
        await get("http://images.example/a.png", handler, resolver(addresses))


async def test_loopback_only_when_allowed():
    def handler(request):
        return httpx.Response(200, content=b"ok")

    assert (
        await get("http://localhost:9/a", handler, resolver(["127.0.0.1"]), allow_private=True)
    )[0] == b"ok"
    with pytest.raises(FetchError):
        await get("http://localhost:9/a", handler, resolver(["127.0.0.1"]))


async def test_each_redirect_hop_is_checked_again():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://metadata.internal/latest"})

    resolve = resolver([PUBLIC], ["169.254.169.254"])
    with pytest.raises(FetchError, match="private"):
        await get("http://images.example/a.png", handler, resolve)
    assert [host for host, _ in resolve.calls] == ["images.example", "metadata.internal"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://images.example/a", r"http\(s\)"),
        ("http://u:p@images.example/a", "credentials"),
        ("file:///etc/passwd", r"http\(s\)"),
    ],
)
async def test_only_plain_http_urls(url, message):
    with pytest.raises(FetchError, match=message):
        await get(url, lambda r: httpx.Response(200), resolver([PUBLIC]))


async def test_bounded_in_size_and_answers_other_than_200_refused():
    big = lambda r: httpx.Response(200, content=b"x" * 1001)  # noqa: E731
    with pytest.raises(FetchError, match="larger than 1000"):
        await get("http://images.example/a", big, resolver([PUBLIC]))

    def streamed(request):
        return httpx.Response(200, stream=httpx.ByteStream(b"y" * 1500))

    with pytest.raises(FetchError, match="larger than 1000"):
        await get("http://images.example/a", streamed, resolver([PUBLIC]))
    with pytest.raises(FetchError, match="HTTP 404"):
        await get("http://images.example/a", lambda r: httpx.Response(404), resolver([PUBLIC]))


async def test_a_name_that_does_not_resolve():
    async def failing(host, port):
        raise OSError("no such host")

    with pytest.raises(FetchError, match="cannot resolve"):
        await get("http://nowhere.example/a", lambda r: httpx.Response(200), failing)


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",  # NAT64 (well-known prefix) of 10.0.0.1
        "64:ff9b::7f00:1",  # ... of 127.0.0.1
        "64:ff9b:1::808:808",  # NAT64 for local use: refused whatever it embeds
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
        "::ffff:0:a00:1",  # SIIT 10.0.0.1
        "::ffff:0:808:808",  # SIIT, even of a public address
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "fec0::1",  # site-local
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
async def test_ipv6_forms_that_reach_private_ipv4_are_refused(address):
    def handler(request):
        raise AssertionError("must not connect")

    with pytest.raises(FetchError, match="private or reserved"):
        await get("http://images.example/a.png", handler, resolver([address]))


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"])
async def test_ipv6_forms_of_public_addresses_are_fetched(address):
    def handler(request):
        return httpx.Response(200, content=b"ok")

    assert (await get("http://images.example/a", handler, resolver([address])))[0] == b"ok"
