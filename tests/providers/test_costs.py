"""What a provider's reported cost must be to be billed (``hub.providers.costs``)."""

import math

import pytest

from hub.providers.costs import MAX_REPORTED_USD, reported_usd, with_cost


@pytest.mark.parametrize(
    "value, text, expected",
    [
        (0.042, False, 0.042),
        (0, False, 0.0),
        (2, False, 2.0),
        (MAX_REPORTED_USD, False, MAX_REPORTED_USD),
        ("0.14", True, 0.14),
        (" 0.1400 ", True, 0.14),
        (".5", True, 0.5),
        ("0", True, 0.0),
    ],
)
def test_a_sane_figure_is_read(value: object, text: bool, expected: float):
    assert reported_usd(value, text=text) == expected


@pytest.mark.parametrize(
    "value, text",
    [
        (-0.01, False),
        (math.nan, False),
        (math.inf, False),
        (MAX_REPORTED_USD + 0.01, False),
        (10**400, False),
        (True, False),
        (None, False),
        ([0.1], False),
        ("0.14", False),
        ("-0.14", True),
        ("1e-2", True),
        ("nan", True),
        ("0x10", True),
        ("1,5", True),
        ("", True),
        ("1" * 40, True),
        ("2000", True),
    ],
)
def test_anything_else_is_no_figure(value: object, text: bool):
    assert reported_usd(value, text=text) is None


def test_with_cost_sets_cost_usd_only_for_a_figure():
    assert with_cost({"status": "success"}, 0.05) == {"status": "success", "cost_usd": 0.05}
    assert with_cost({"status": "success"}, "0.05") == {"status": "success"}
