"""Settings: defaults, normalisation, provider key fallbacks, the TOML file, and one-line errors."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import PROVIDERS, Settings, SettingsError, load_settings

FALLBACK_VARIABLES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "XAI_API_KEY",
    "DEEPSEEK_API_KEY",
    "TOGETHER_API_KEY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SYNAPGATE_* or provider key of the machine running the tests leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("SYNAPGATE_") or name.upper() in FALLBACK_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def one_line_error(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{variable}: ")
    return message


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url == "sqlite+aiosqlite:///./synapgate.db"
    assert s.is_sqlite is True
    assert s.redis_url is None
    assert s.admin_key is None
    assert s.secret_key is None
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8080, 1)
    assert s.byok_fee_usd_per_request == Decimal(0)
    assert isinstance(s.byok_fee_rate, Decimal)
    assert s.reservation_ttl_seconds == 600
    assert s.store_message_content is False
    for name in PROVIDERS:
        assert s.provider(name).api_key is None
    assert s.provider("openai").base_url == "https://api.openai.com/v1"
    assert s.provider("anthropic").base_url == "https://api.anthropic.com/v1"
    assert s.provider("gemini").base_url == "https://generativelanguage.googleapis.com/v1beta"
    assert s.provider("xai").base_url == "https://api.x.ai/v1"
    assert s.provider("deepseek").base_url == "https://api.deepseek.com/v1"
    assert s.provider("together").base_url == "https://api.together.xyz/v1"
    with pytest.raises(KeyError):
        s.provider("mistral")


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("postgresql://u:p@db.example:5432/sg", "postgresql+asyncpg://u:p@db.example:5432/sg"),
        ("postgres://u@localhost/sg", "postgresql+asyncpg://u@localhost/sg"),
        ("postgresql+asyncpg://u@localhost/sg", "postgresql+asyncpg://u@localhost/sg"),
        ("sqlite:///data/sg.db", "sqlite+aiosqlite:///data/sg.db"),
        ("sqlite:////abs/sg.db", "sqlite+aiosqlite:////abs/sg.db"),
        ("sqlite+aiosqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
    ],
)
def test_database_url_scheme_normalisation(
    monkeypatch: pytest.MonkeyPatch, given: str, normalised: str
) -> None:
    monkeypatch.setenv("SYNAPGATE_DATABASE_URL", given)
    s = load_settings()
    assert s.database_url == normalised
    assert s.is_sqlite is normalised.startswith("sqlite")


def test_password_survives_normalisation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNAPGATE_DATABASE_URL", "postgresql://user:s3cr%40t@h/db")
    assert load_settings().database_url == "postgresql+asyncpg://user:s3cr%40t@h/db"


@pytest.mark.parametrize(
    ("variable", "provider"),
    [
        ("OPENAI_API_KEY", "openai"),
        ("ANTHROPIC_API_KEY", "anthropic"),
        ("GEMINI_API_KEY", "gemini"),
        ("GOOGLE_API_KEY", "gemini"),
        ("XAI_API_KEY", "xai"),
        ("DEEPSEEK_API_KEY", "deepseek"),
        ("TOGETHER_API_KEY", "together"),
    ],
)
def test_provider_key_falls_back_to_the_sdk_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, provider: str
) -> None:
    monkeypatch.setenv(variable, f"key-from-{variable}")
    s = load_settings()
    key = s.provider(provider).api_key
    assert key is not None
    assert key.get_secret_value() == f"key-from-{variable}"
    assert f"key-from-{variable}" not in repr(s)  # SecretStr: never printed
    others = [p for p in PROVIDERS if p != provider]
    assert all(s.provider(p).api_key is None for p in others)


def test_gemini_key_wins_over_google_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "google")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini")
    key = load_settings().provider("gemini").api_key
    assert key is not None and key.get_secret_value() == "gemini"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_synapgate_variable_wins_over_fallback(monkeypatch: pytest.MonkeyPatch, provider: str) -> None:
    from config.settings import PROVIDER_DEFAULTS

    for fallback in PROVIDER_DEFAULTS[provider][1]:
        monkeypatch.setenv(fallback, "fallback-key")
    monkeypatch.setenv(f"SYNAPGATE_{provider.upper()}_API_KEY", "synapgate-key")
    key = load_settings().provider(provider).api_key
    assert key is not None and key.get_secret_value() == "synapgate-key"


def test_base_url_override_drops_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNAPGATE_OPENAI_BASE_URL", "http://127.0.0.1:9100/v1/")
    monkeypatch.setenv("SYNAPGATE_GEMINI_BASE_URL", "https://proxy.example/v1beta")
    s = load_settings()
    assert s.provider("openai").base_url == "http://127.0.0.1:9100/v1"
    assert s.provider("gemini").base_url == "https://proxy.example/v1beta"
    assert s.provider("anthropic").base_url == "https://api.anthropic.com/v1"


def test_other_scalar_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNAPGATE_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("SYNAPGATE_PORT", "9000")
    monkeypatch.setenv("SYNAPGATE_BYOK_FEE_RATE", "0.025")
    monkeypatch.setenv("SYNAPGATE_SECRET_KEY", "shh")
    monkeypatch.setenv("synapgate_log_level", "debug")  # names are case-insensitive
    s = load_settings()
    assert s.redis_url == "redis://127.0.0.1:6379/3"
    assert s.port == 9000
    assert s.byok_fee_rate == Decimal("0.025")
    assert s.secret_key is not None and s.secret_key.get_secret_value() == "shh"
    assert s.log_level == "debug"


def test_empty_redis_url_means_no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNAPGATE_REDIS_URL", "")
    assert load_settings().redis_url is None


def test_a_redis_cluster_is_chosen_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().redis_cluster is False
    monkeypatch.setenv("SYNAPGATE_REDIS_URL", "redis://node-1.internal:7000")
    monkeypatch.setenv("SYNAPGATE_REDIS_CLUSTER", "true")
    s = load_settings()
    assert s.redis_cluster is True and s.redis_url == "redis://node-1.internal:7000"
    monkeypatch.setenv("SYNAPGATE_REDIS_URL", "rediss://node-1.internal:7000/0?ssl_cert_reqs=none")
    assert load_settings().redis_cluster is True


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (None, "needs SYNAPGATE_REDIS_URL"),
        ("unix:///run/redis.sock", "must be redis:// or rediss://"),
        ("redis://node-1.internal:7000/3", "only database 0"),
    ],
)
def test_a_redis_cluster_setting_that_cannot_work_is_one_line(
    monkeypatch: pytest.MonkeyPatch, url: str | None, says: str
) -> None:
    if url is not None:
        monkeypatch.setenv("SYNAPGATE_REDIS_URL", url)
    assert says in one_line_error(monkeypatch, "SYNAPGATE_REDIS_CLUSTER", "true")


def test_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "synapgate.toml"
    config.write_text(
        'database_url = "postgresql://sg@db.internal/synapgate"\n'
        'redis_url = "redis://cache.internal:6379/0"\n'
        "port = 9090\n"
        'openai_api_key = "sk-from-toml"\n'
        'anthropic_base_url = "http://mock.internal:9100/v1/"\n'
        'byok_fee_usd_per_request = "0.001"\n'
    )
    monkeypatch.setenv("SYNAPGATE_CONFIG", str(config))
    s = load_settings()
    assert s.database_url == "postgresql+asyncpg://sg@db.internal/synapgate"
    assert s.redis_url == "redis://cache.internal:6379/0"
    assert s.port == 9090
    key = s.provider("openai").api_key
    assert key is not None and key.get_secret_value() == "sk-from-toml"
    assert s.provider("anthropic").base_url == "http://mock.internal:9100/v1"
    assert s.byok_fee_usd_per_request == Decimal("0.001")

    # the environment wins over the file
    monkeypatch.setenv("SYNAPGATE_PORT", "9191")
    monkeypatch.setenv("SYNAPGATE_OPENAI_API_KEY", "sk-from-env")
    s = load_settings()
    assert s.port == 9191
    key = s.provider("openai").api_key
    assert key is not None and key.get_secret_value() == "sk-from-env"
    assert s.database_url == "postgresql+asyncpg://sg@db.internal/synapgate"


def test_bad_value_in_toml_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "synapgate.toml"
    config.write_text('database_url = "mysql://u@h/db"\n')
    monkeypatch.setenv("SYNAPGATE_CONFIG", str(config))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        "SYNAPGATE_DATABASE_URL: unsupported database 'mysql' (use postgresql:// or sqlite://)"
    )


def test_unknown_key_in_toml_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "synapgate.toml"
    config.write_text("databse_url = 'sqlite:///x.db'\n")
    monkeypatch.setenv("SYNAPGATE_CONFIG", str(config))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "\n" not in str(info.value)
    assert "databse_url" in str(info.value)


def test_missing_toml_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNAPGATE_CONFIG", str(tmp_path / "does-not-exist.toml"))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("SYNAPGATE_CONFIG: ")


def test_malformed_toml_file_is_a_settings_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "synapgate.toml"
    config.write_text("port = = 1\n")
    monkeypatch.setenv("SYNAPGATE_CONFIG", str(config))
    try:
        load_settings()
    except SettingsError as exc:
        assert str(exc).startswith("SYNAPGATE_CONFIG: ")
        assert "\n" not in str(exc)
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped load_settings: {exc}") from None
    else:
        raise AssertionError("a malformed TOML file was accepted")


# -- one-line errors naming the variable ---------------------------------------------------------


def test_unparsable_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_DATABASE_URL", "not a url")
    assert message == (
        "SYNAPGATE_DATABASE_URL: not a database URL: Could not parse SQLAlchemy URL from given URL string"
    )


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "mssql+pyodbc://h/db", "oracle://h/db", "sqlite+pysqlite:///x"]
)
def test_unsupported_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_DATABASE_URL", url)
    assert "unsupported database" in message
    assert "use postgresql:// or sqlite://" in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "localhost:6379", "127.0.0.1"])
def test_bad_redis_url(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_REDIS_URL", url)
    assert message == "SYNAPGATE_REDIS_URL: must start with redis://, rediss:// or unix://"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SYNAPGATE_OPENAI_BASE_URL", "ftp://api.openai.com/v1"),
        ("SYNAPGATE_ANTHROPIC_BASE_URL", "api.anthropic.com"),
        ("SYNAPGATE_GEMINI_BASE_URL", "http://"),
        ("SYNAPGATE_TOGETHER_BASE_URL", "https://bad host/v1"),
    ],
)
def test_bad_base_url(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    message = one_line_error(monkeypatch, variable, value)
    assert message == f"{variable}: must be an http:// or https:// URL"


def test_unknown_provider_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_FOO_API_KEY", "sk-foo")
    assert message == (
        "SYNAPGATE_FOO_API_KEY: not a SynapGate setting "
        "(unknown provider; known: openai, anthropic, gemini, xai, deepseek, together)"
    )
    assert "sk-foo" not in message  # the value (a secret) is never echoed


def test_unknown_provider_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_MISTRAL_BASE_URL", "https://api.mistral.ai/v1")
    assert message.startswith("SYNAPGATE_MISTRAL_BASE_URL: not a SynapGate setting (unknown provider")


def test_typo_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_DATABSE_URL", "sqlite:///x.db")
    assert message == "SYNAPGATE_DATABSE_URL: not a SynapGate setting"


@pytest.mark.parametrize("value", ["abc", "80.5", "", "8080x"])
def test_non_integer_port(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_PORT", value)
    assert message.startswith("SYNAPGATE_PORT: Input should be a valid integer")


@pytest.mark.parametrize(("value", "bound"), [("0", "greater than or equal to 1"), ("65536", "less than")])
def test_port_out_of_range(monkeypatch: pytest.MonkeyPatch, value: str, bound: str) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_PORT", value)
    assert bound in message


@pytest.mark.parametrize(("value", "bound"), [("0", "greater than or equal to 1"), ("65", "less than")])
def test_workers_out_of_range(monkeypatch: pytest.MonkeyPatch, value: str, bound: str) -> None:
    message = one_line_error(monkeypatch, "SYNAPGATE_WORKERS", value)
    assert message.startswith("SYNAPGATE_WORKERS: ") and bound in message


def test_workers_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNAPGATE_WORKERS", "2")
    assert load_settings().workers == 2  # `synapgate serve` starts this many (tests/integration/test_cli.py)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SYNAPGATE_LOG_LEVEL", "verbose"),
        ("SYNAPGATE_WORKERS", "0"),
        ("SYNAPGATE_BYOK_FEE_RATE", "1.5"),
        ("SYNAPGATE_BYOK_FEE_USD_PER_REQUEST", "-0.01"),
        ("SYNAPGATE_RESERVATION_TTL_SECONDS", "1"),
        ("SYNAPGATE_KEY_CACHE_SECONDS", "60"),
    ],
)
def test_other_bad_settings_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    one_line_error(monkeypatch, variable, value)


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.port = 1
    assert s.port == 8080


def test_direct_construction_validates_too() -> None:
    assert Settings(database_url="postgresql://h/db").database_url == "postgresql+asyncpg://h/db"
    with pytest.raises(SettingsError):
        load_settings(database_url="mysql://h/db")
