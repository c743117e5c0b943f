"""Settings from the environment: types, the PaaS ``PORT``, and bad values as InvalidInput."""

from __future__ import annotations

import pytest

from roost.errors import InvalidInput, RoostError
from roost.runtime.config import Settings

TOKEN = "a-service-token-of-32-characters-or-more"


def test_empty_environment_gives_the_defaults():
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env({})
    assert (s.port, s.grace_period_s, s.migrate_on_start, s.service_token) == (8000, 25.0, True, None)


def test_variables_are_parsed_to_each_fields_type():
    s = Settings.from_env(
        {
            "ROOST_DATABASE_URL": "postgresql://u@db/roost",
            "ROOST_SERVICE_TOKEN": TOKEN,
            "ROOST_PORT": "9001",
            "ROOST_GRACE_PERIOD_S": "2.5",
            "ROOST_MIGRATE_ON_START": "false",
            "ROOST_WS_OUTGOING_BUFFER": " 64 ",
            "ROOST_RESTART_BUDGET": "0",
            "ROOST_STALL_MONITOR": "yes",
            "ROOST_LOG_LEVEL": "DEBUG",
        }
    )
    assert s.database_url == "postgresql://u@db/roost" and s.is_postgres
    assert s.service_token == TOKEN and s.service_tokens_by_name == {"default": TOKEN}
    assert s.port == 9001 and isinstance(s.port, int)
    assert s.grace_period_s == 2.5 and isinstance(s.grace_period_s, float)
    assert s.migrate_on_start is False
    assert s.ws_outgoing_buffer == 64
    assert s.restart_budget == 0
    assert s.stall_monitor is True
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("ON", True),
        ("0", False),
        ("False", False),
        ("no", False),
        (" off ", False),
    ],
)
def test_booleans_accept_the_usual_spellings(raw: str, expected: bool):
    assert Settings.from_env({"ROOST_MIGRATE_ON_START": raw}).migrate_on_start is expected


def test_paas_port_is_used_when_roost_port_is_not_set():
    assert Settings.from_env({"PORT": "5123"}).port == 5123


def test_roost_port_wins_over_paas_port():
    assert Settings.from_env({"PORT": "5123", "ROOST_PORT": "7000"}).port == 7000


def test_empty_roost_port_falls_back_to_paas_port():
    """An empty variable counts as unset everywhere, PORT's fallback included."""
    assert Settings.from_env({"PORT": "5123", "ROOST_PORT": ""}).port == 5123


def test_empty_variables_mean_the_default():
    s = Settings.from_env({"ROOST_PORT": "", "ROOST_SERVICE_TOKEN": "", "ROOST_GRACE_PERIOD_S": ""})
    assert (s.port, s.service_token, s.grace_period_s) == (8000, None, 25.0)


def test_overrides_win_over_the_environment():
    s = Settings.from_env({"ROOST_PORT": "9001", "PORT": "5000"}, port=8123, database_url="sqlite:///x.db")
    assert s.port == 8123 and s.database_url == "sqlite:///x.db" and not s.is_postgres


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ROOST_GRACE_PERIOD_S", "3")
    monkeypatch.setenv("PORT", "4242")
    monkeypatch.delenv("ROOST_PORT", raising=False)
    s = Settings.from_env()
    assert s.grace_period_s == 3.0 and s.port == 4242


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"ROOST_PORT": "eighty"}, "ROOST_PORT='eighty' is not a valid int"),
        ({"PORT": "80.5"}, "ROOST_PORT='80.5' is not a valid int"),
        ({"ROOST_GRACE_PERIOD_S": "soon"}, "ROOST_GRACE_PERIOD_S='soon' is not a valid float"),
        ({"ROOST_MIGRATE_ON_START": "maybe"}, "ROOST_MIGRATE_ON_START='maybe' is not a valid bool"),
        ({"ROOST_STALL_MONITOR": "2"}, "ROOST_STALL_MONITOR='2' is not a valid bool"),
    ],
)
def test_values_the_type_cannot_hold_raise_invalid_input(env: dict[str, str], mentions: str):
    with pytest.raises(InvalidInput) as info:
        Settings.from_env(env)
    assert mentions in info.value.message
    assert info.value.code == "invalid_input"
    assert isinstance(info.value, RoostError)
    assert isinstance(info.value.__cause__, ValueError)  # chained, not swallowed


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"ROOST_GRACE_PERIOD_S": "-1"}, "ROOST_GRACE_PERIOD_S=-1.0 must not be negative"),
        ({"ROOST_GRACE_PERIOD_S": "nan"}, "ROOST_GRACE_PERIOD_S=nan is not a finite number"),
        ({"ROOST_WS_PING_INTERVAL_S": "inf"}, "is not a finite number"),
        ({"ROOST_WS_PING_INTERVAL_S": "0"}, "ROOST_WS_PING_INTERVAL_S=0.0 must be positive"),
        ({"ROOST_WS_OUTGOING_BUFFER": "0"}, "ROOST_WS_OUTGOING_BUFFER=0 must be positive"),
        ({"ROOST_RESTART_BUDGET": "-3"}, "ROOST_RESTART_BUDGET=-3 must not be negative"),
        ({"ROOST_PORT": "70000"}, "ROOST_PORT=70000 is not a TCP port"),
        ({"PORT": "-1"}, "ROOST_PORT=-1 must not be negative"),
        ({"ROOST_RESTART_INITIAL_BACKOFF_S": "120"}, "is over ROOST_RESTART_MAX_BACKOFF_S"),
        ({"ROOST_LOG_FORMAT": "xml"}, "ROOST_LOG_FORMAT='xml' is not one of auto, console, json"),
        ({"ROOST_LOG_LEVEL": "loud"}, "ROOST_LOG_LEVEL='loud' is not one of"),
        ({"ROOST_PROCESSOR_USAGE_INTERVAL": "0"}, "ROOST_PROCESSOR_USAGE_INTERVAL='0' must be a positive"),
        ({"ROOST_PROCESSOR_USAGE_CRON": "61 * * * *"}, "ROOST_PROCESSOR_USAGE_CRON: cron expression '61 * * * *'"),
        ({"ROOST_PROCESSOR_USAGE_CRON": "hourly"}, "want five fields"),
        ({"ROOST_PROCESSOR_USAGE_CRON": "CRON_TZ=Nowhere/Land 0 8 * * *"}, "unknown time zone 'Nowhere/Land'"),
        ({"ROOST_PROCESSOR_USAGE_CRON": "0 8 * * *", "ROOST_PROCESSOR_USAGE_INTERVAL": "60"},
         "ROOST_PROCESSOR_USAGE_INTERVAL and ROOST_PROCESSOR_USAGE_CRON are both set"),
    ],
)
def test_out_of_range_values_raise_invalid_input(env: dict[str, str], mentions: str):
    with pytest.raises(InvalidInput) as info:
        Settings.from_env(env)
    assert mentions in info.value.message


def test_overrides_are_checked_like_the_environment():
    """The CLI passes its flags as overrides; a bad flag is the same clear error."""
    with pytest.raises(InvalidInput, match="ROOST_PORT=99999"):
        Settings.from_env({}, port=99999)


def test_port_zero_is_allowed_for_an_ephemeral_port():
    assert Settings.from_env({"ROOST_PORT": "0"}).port == 0


def test_secrets_and_tokens_are_kept_out_of_repr():
    key = "do-not-log-me-" + "0123456789abcdefghijklmnopqrstuv"
    s = Settings.from_env({"ROOST_SECRET_KEY": key, "ROOST_SERVICE_TOKENS": f"app:{TOKEN}"})
    assert s.secret_key == key and s.sealing_keys == (key,)
    assert key not in repr(s) and TOKEN not in repr(s)


def test_named_service_tokens_are_read_with_the_single_one_named_default():
    other = "o" + TOKEN[1:]
    s = Settings.from_env({"ROOST_SERVICE_TOKEN": TOKEN, "ROOST_SERVICE_TOKENS": f" app:{other} , ops:{TOKEN}x "})
    assert s.service_tokens_by_name == {"default": TOKEN, "app": other, "ops": TOKEN + "x"}


@pytest.mark.parametrize(("env", "needle"), [
    ({"ROOST_SERVICE_TOKEN": "s3cret"}, "at least 32"),
    ({"ROOST_SERVICE_TOKENS": "app:short"}, "at least 32"),
    ({"ROOST_SERVICE_TOKENS": f"app:{TOKEN},app:{TOKEN}x"}, "used twice"),
    ({"ROOST_SERVICE_TOKENS": f"app:{TOKEN},ops:{TOKEN}"}, "same as another"),
    ({"ROOST_SERVICE_TOKEN": TOKEN, "ROOST_SERVICE_TOKENS": f"default:{TOKEN}x"}, "used twice"),
    ({"ROOST_SERVICE_TOKENS": TOKEN}, "name:token"),
    ({"ROOST_SERVICE_TOKENS": f"bad name:{TOKEN}"}, "name:token"),
])
def test_a_weak_or_malformed_service_token_refuses_to_start_and_says_how_to_make_one(env, needle):
    with pytest.raises(InvalidInput) as info:
        Settings.from_env(env)
    assert needle in info.value.message
    assert TOKEN not in info.value.message  # a token is never echoed
    if "at least" in needle:
        assert "secrets.token_urlsafe(32)" in info.value.message


@pytest.mark.parametrize("key", ["changeme", "k" * 40, "abababababababababababababababababab", ""])
def test_a_weak_secret_key_refuses_to_start_and_says_how_to_make_one(key):
    with pytest.raises(InvalidInput) as info:
        Settings(secret_key=key or " ")
    assert "Fernet.generate_key()" in info.value.message


def test_a_fernet_key_or_a_long_generated_string_is_accepted_and_keys_keep_their_order():
    from cryptography.fernet import Fernet

    new, old = Fernet.generate_key().decode(), "x7Qp2LmZ9vRt4KsW8yNc3HdJ6gFb1AeU"
    assert Settings.from_env({"ROOST_SECRET_KEYS": f"{new}, {old}"}).sealing_keys == (new, old)
    assert Settings.from_env({"ROOST_SECRET_KEY": old}).sealing_keys == (old,)
    assert Settings().sealing_keys == ()


def test_secret_key_and_secret_keys_together_are_refused():
    with pytest.raises(InvalidInput, match="both set"):
        Settings.from_env({"ROOST_SECRET_KEY": TOKEN, "ROOST_SECRET_KEYS": TOKEN})


@pytest.mark.parametrize(
    ("url", "postgres"),
    [("postgresql://h/db", True), ("postgres://h/db", True), ("sqlite:///./roost.db", False), ("sqlite://", False)],
)
def test_is_postgres_follows_the_url_scheme(url: str, postgres: bool):
    assert Settings(database_url=url).is_postgres is postgres


def test_processor_schedules_are_read_per_processor():
    settings = Settings.from_env({"ROOST_PROCESSOR_USAGE_CRON": "CRON_TZ=Europe/Paris  0 8 * * 1-5",
                                  "ROOST_PROCESSOR_OTHER_INTERVAL": "90"})
    assert settings.processor_crons == {"usage": "CRON_TZ=Europe/Paris 0 8 * * 1-5"}
    assert settings.processor_intervals_s == {"other": 90.0}
