"""Every URL the hub is given is checked in full when given, by the same function each use
repeats (hub.net.urls.checked): nothing here resolves or connects."""

import pytest

from hub.net.urls import UrlRefused, checked


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example/", r"http\(s\)"),
        ("javascript:alert(1)", r"http\(s\)"),
        ("http:///path", r"http\(s\)"),
        ("http://u:p@hooks.example/", "credentials"),
        ("http://u@hooks.example/", "credentials"),
        ("http://hooks.example:0/", "port"),
        ("http://hooks.example:65536/", "port"),
        ("http://127.0.0.1:99999/", "port"),
        ("http://hooks.example:+80/", "port"),
        ("http://hooks.example:٨٠/", "port"),  # Unicode digits
        ("http://hooks.example:8 0/", "spaces"),
        ("http://hooks.example/a b", "spaces"),
        ("http://hooks.example/\x00", "control"),
        ("http://hooks.example/\r\nx: y", "control"),
        ("http://[::1/", "host"),
        ("http://a..example/", "host name"),
        ("http://" + "a" * 64 + ".example/", "host name"),
        ("http://hooks.example/" + "a" * 8200, "at most"),
        # Addresses written as the host, judged by the rules sending applies.
        ("http://127.0.0.1/", "private"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://100.64.0.1/", "private"),  # CGNAT
        ("http://169.254.169.254/", "private"),  # link-local: cloud metadata
        ("http://0.0.0.0/", "private"),
        ("http://224.0.0.1/", "private"),
        ("http://[::1]/", "private"),
        ("http://[fe80::1]/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 of 10.0.0.1
        ("http://[2002:a00:1::]/", "private"),  # 6to4 of 10.0.0.1
        ("http://[fec0::1]/", "private"),  # site-local
        # Old numeric spellings that resolvers read as an IPv4 address.
        ("http://2130706433/", "four decimal numbers"),
        ("http://0x7f.1/", "four decimal numbers"),
        ("http://127.1/", "four decimal numbers"),
    ],
)
def test_a_bad_url_is_refused_saying_why(url, message):
    with pytest.raises(UrlRefused, match=message):
        checked(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example/in?x=1",
        "http://hooks.example:8080/",
        "https://xn--bcher-kva.example/",
        "https://bücher.example/",
        "http://93.184.216.34/a.png",
        "http://[2606:4700::1111]/",
        "http://localhost:8080/",  # a name: judged when resolved, at each use
    ],
)
def test_a_good_url_is_taken(url):
    assert checked(url).port in (80, 443, 8080)


def test_loopback_only_where_the_hub_allows_it():
    assert checked("http://127.0.0.1:8080/", allow_private=True).port == 8080
    assert checked("http://[::1]:8080/", allow_private=True).port == 8080
    with pytest.raises(UrlRefused, match="private"):
        checked("http://10.0.0.1/", allow_private=True)
