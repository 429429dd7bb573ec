import dataclasses
from pathlib import Path

import pytest

from hub.config.env import Secret, SettingsError, allowed, check, load, setting, variables

PREFIX = "T_"


@dataclasses.dataclass(frozen=True)
class Sample:
    count: int = setting(3, ge=1)
    ratio: float = setting(0.5, ge=0, le=1)
    wait: float = setting(15.0, gt=0, duration=True)
    ttl: int = setting(60, gt=0, duration=True)
    flag: bool = setting(False)
    mode: str = setting("FULL", choices=("OFF", "NORMAL", "FULL"))
    url: str = setting("", url=True)
    where: Path = setting(Path("data"))
    keys: tuple[Secret, ...] = setting((), alias="T_KEY")
    names: tuple[str, ...] = setting(())
    token: str | None = setting(None, secret=True)
    port: int = setting(8000, ge=1, le=65535, alias="PORT")
    rate: float = setting(100.0, ge=0, note="0 = off")
    # Not a setting: load leaves it alone.
    other: str = "x"

    def __post_init__(self) -> None:
        check(self, PREFIX)


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as refused:
        load(Sample, env, PREFIX)
    return str(refused.value)


def test_unset_and_empty_variables_keep_the_defaults():
    assert load(Sample, {}, PREFIX) == Sample()
    assert load(Sample, {"T_COUNT": "", "T_MODE": "  "}, PREFIX) == Sample()


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("90", 90),
        ("1.5", 1.5),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        (" 2M ", 120),
        ("0.5m", 30),
    ],
)
def test_durations_take_a_unit(raw, seconds):
    assert load(Sample, {"T_WAIT": raw}, PREFIX).wait == seconds


def test_a_whole_seconds_duration_refuses_a_fraction_of_a_second():
    assert load(Sample, {"T_TTL": "1.5h"}, PREFIX).ttl == 5400
    assert refusal({"T_TTL": "1.5"}) == (
        "T_TTL='1.5': must be greater than 0 (whole seconds, e.g. 15 or 2m)"
    )


@pytest.mark.parametrize("raw", ["7w", "soon", "m", "nan", "inf", "-1", "0", "0s"])
def test_a_bad_duration_names_the_variable_the_value_and_what_is_allowed(raw):
    assert refusal({"T_WAIT": raw}) == (
        f"T_WAIT={raw!r}: must be greater than 0 (seconds, e.g. 15 or 2m)"
    )


@pytest.mark.parametrize(
    ("raw", "value"),
    [(word, True) for word in ("1", "true", "YES", "On")]
    + [(word, False) for word in ("0", "false", "no", "OFF")],
)
def test_booleans(raw, value):
    assert load(Sample, {"T_FLAG": raw}, PREFIX).flag is value


def test_a_bad_boolean_lists_the_words():
    assert refusal({"T_FLAG": "maybe"}) == (
        "T_FLAG='maybe': must be one of 1, 0, true, false, yes, no, on, off"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"T_COUNT": "0"}, "T_COUNT='0': must be a whole number, at least 1"),
        ({"T_COUNT": "2.5"}, "T_COUNT='2.5': must be a whole number, at least 1"),
        ({"T_RATIO": "1.01"}, "T_RATIO='1.01': must be a number from 0 to 1"),
        ({"T_PORT": "65536"}, "T_PORT='65536': must be a whole number from 1 to 65535"),
        ({"T_RATE": "-1"}, "T_RATE='-1': must be a number, at least 0 (0 = off)"),
        ({"T_MODE": "fast"}, "T_MODE='fast': must be one of OFF, NORMAL, FULL"),
        ({"T_URL": "hub.example"}, "T_URL='hub.example': must be an http:// or https:// URL"),
        (
            {"T_URL": "ftp://hub.example"},
            "T_URL='ftp://hub.example': must be an http:// or https:// URL",
        ),
    ],
)
def test_out_of_range_and_wrong_type(env, message):
    assert refusal(env) == message


def test_bounds_are_inclusive_or_exclusive_as_declared():
    edges = load(Sample, {"T_COUNT": "1", "T_RATIO": "1", "T_PORT": "65535"}, PREFIX)
    assert (edges.count, edges.ratio, edges.port) == (1, 1.0, 65535)
    assert load(Sample, {"T_WAIT": "0.001"}, PREFIX).wait == 0.001


def test_choices_match_in_any_case_and_keep_their_spelling():
    assert load(Sample, {"T_MODE": "normal"}, PREFIX).mode == "NORMAL"


def test_lists_are_comma_separated_and_skip_empty_items():
    loaded = load(Sample, {"T_KEYS": " new, old,,", "T_NAMES": "a,b"}, PREFIX)
    assert [key.reveal() for key in loaded.keys] == ["new", "old"]
    assert loaded.names == ("a", "b")


def test_paths():
    assert load(Sample, {"T_WHERE": "/var/lib/x"}, PREFIX).where == Path("/var/lib/x")


def test_an_alias_is_read_when_the_own_variable_is_unset():
    assert load(Sample, {"PORT": "9000"}, PREFIX).port == 9000
    assert load(Sample, {"PORT": "9000", "T_PORT": "9001"}, PREFIX).port == 9001
    assert load(Sample, {"PORT": "9000", "T_PORT": ""}, PREFIX).port == 9000
    assert [key.reveal() for key in load(Sample, {"T_KEY": "k"}, PREFIX).keys] == ["k"]
    assert "PORT='x'" in refusal({"PORT": "x"})


def test_secrets_stay_out_of_errors_and_repr():
    loaded = load(Sample, {"T_TOKEN": "hunter2", "T_KEYS": "key-abc"}, PREFIX)
    assert loaded.token == "hunter2"
    assert "hunter2" not in repr(loaded) and "key-abc" not in repr(loaded)

    @dataclasses.dataclass(frozen=True)
    class Strict:
        pin: str = setting("", choices=("1234",), secret=True)

    with pytest.raises(SettingsError) as refused:
        load(Strict, {"T_PIN": "hunter2"}, PREFIX)
    assert str(refused.value) == "T_PIN='***': must be one of 1234"


def test_an_error_is_one_line_whatever_the_value_holds():
    message = refusal({"T_COUNT": "1\n2"})
    assert "\n" not in message and message.startswith("T_COUNT='1\\n2'")


def test_values_given_in_code_meet_the_same_rules():
    with pytest.raises(SettingsError) as refused:
        Sample(wait=0)
    assert str(refused.value) == "T_WAIT=0: must be greater than 0 (seconds, e.g. 15 or 2m)"
    with pytest.raises(SettingsError, match="T_MODE='fast'"):
        dataclasses.replace(Sample(), mode="fast")
    with pytest.raises(SettingsError, match="T_TOKEN='\\*\\*\\*'"):

        @dataclasses.dataclass(frozen=True)
        class Pinned:
            token: str = setting("a", choices=("b",), secret=True)

        check(Pinned(), PREFIX)


def test_a_base_supplies_other_defaults():
    base = Sample(count=7, wait=2.0)
    loaded = load(Sample, {"T_WAIT": "1m"}, PREFIX, base)
    assert (loaded.count, loaded.wait, loaded.other) == (7, 60.0, "x")


def test_variables_lists_every_name_read():
    names = variables(Sample, PREFIX)
    assert {"T_COUNT", "T_KEYS", "T_KEY", "T_PORT", "PORT"} <= names
    assert "T_OTHER" not in names


def test_allowed_describes_each_kind():
    rule = dataclasses.fields(Sample)[0].metadata["hub.config.env"]
    assert allowed(int, rule) == "a whole number, at least 1"
    assert allowed(float, dataclasses.replace(rule, ge=None, duration=True)) == (
        "a duration (seconds, e.g. 15 or 2m)"
    )
    assert allowed(float, dataclasses.replace(rule, ge=None, gt=0, le=60)) == (
        "a number, greater than 0 and at most 60"
    )
