"""The one typed Settings object of SynapGate, read from `SYNAPGATE_*` variables and an optional TOML file.

Build it once with `load_settings()` at start-up and pass it down; nothing else reads the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pydantic_settings
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "SYNAPGATE_"

#: Providers SynapGate knows, with the upstream base URL and the variable each provider's own SDK reads.
PROVIDER_DEFAULTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai": ("https://api.openai.com/v1", ("OPENAI_API_KEY",)),
    "anthropic": ("https://api.anthropic.com/v1", ("ANTHROPIC_API_KEY",)),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta", ("GEMINI_API_KEY", "GOOGLE_API_KEY")),
    "xai": ("https://api.x.ai/v1", ("XAI_API_KEY",)),
    "deepseek": ("https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",)),
    "together": ("https://api.together.xyz/v1", ("TOGETHER_API_KEY",)),
}
PROVIDERS: tuple[str, ...] = tuple(PROVIDER_DEFAULTS)


class SettingsError(Exception):
    """A setting is wrong; the message is one line that names the variable."""


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """Where one provider lives and the platform's key for it (None: only BYOK calls can use it)."""

    name: str
    base_url: str
    api_key: SecretStr | None


class ProviderTimeouts(BaseModel):
    """Timeouts of one provider, in seconds; unset ones take the global upstream_* values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: float | None = Field(default=None, gt=0)
    read: float | None = Field(default=None, gt=0)
    total: float | None = Field(default=None, gt=0)


def _provider_field(provider: str, what: Literal["api_key", "base_url"]) -> Any:
    env = f"{ENV_PREFIX}{provider.upper()}_{what.upper()}"
    if what == "api_key":
        fallbacks = PROVIDER_DEFAULTS[provider][1]
        return Field(default=None, validation_alias=AliasChoices(env, *fallbacks))
    return Field(default=PROVIDER_DEFAULTS[provider][0], validation_alias=AliasChoices(env))


class Settings(BaseSettings):
    """Everything an operator can set. Each field `x` is read from `SYNAPGATE_X`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", populate_by_name=True, frozen=True, case_sensitive=False
    )

    database_url: str = "sqlite+aiosqlite:///./synapgate.db"
    redis_url: str | None = None
    # The Redis of redis_url is a Redis Cluster (any node's address; the client finds the rest).
    redis_cluster: bool = False
    admin_key: SecretStr | None = None
    secret_key: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    # Credit enforcement and billing.
    reservation_ttl_seconds: int = Field(default=600, ge=5)
    byok_fee_usd_per_request: Decimal = Field(default=Decimal(0), ge=0)
    byok_fee_rate: Decimal = Field(default=Decimal(0), ge=0, le=1)

    # HTTP surface.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    key_cache_seconds: float = Field(default=2.0, ge=0, le=5)
    store_message_content: bool = False

    # Upstream HTTP.
    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    upstream_read_timeout: float = Field(default=600.0, gt=0)
    upstream_total_timeout: float = Field(default=900.0, gt=0)  # until the answer (streams: its headers)
    upstream_max_connections: int = Field(default=256, ge=1)
    # Per-provider overrides, e.g. SYNAPGATE_UPSTREAM_TIMEOUTS='{"anthropic": {"read": 120, "total": 300}}'.
    upstream_timeouts: dict[str, ProviderTimeouts] = Field(default_factory=dict)

    # Resilience: retries before the first byte reaches the client, fallback chains, circuit breaking.
    upstream_max_retries: int = Field(default=2, ge=0, le=10)
    upstream_retry_backoff_seconds: float = Field(default=0.25, ge=0)
    upstream_retry_max_wait_seconds: float = Field(default=10.0, ge=0)
    # Model → the models tried in order when it fails,
    # e.g. SYNAPGATE_FALLBACKS='{"gpt-4o": ["claude-3-sonnet"]}'.
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_cooldown_seconds: float = Field(default=30.0, gt=0)

    openai_api_key: SecretStr | None = _provider_field("openai", "api_key")
    openai_base_url: str = _provider_field("openai", "base_url")
    anthropic_api_key: SecretStr | None = _provider_field("anthropic", "api_key")
    anthropic_base_url: str = _provider_field("anthropic", "base_url")
    gemini_api_key: SecretStr | None = _provider_field("gemini", "api_key")
    gemini_base_url: str = _provider_field("gemini", "base_url")
    xai_api_key: SecretStr | None = _provider_field("xai", "api_key")
    xai_base_url: str = _provider_field("xai", "base_url")
    deepseek_api_key: SecretStr | None = _provider_field("deepseek", "api_key")
    deepseek_base_url: str = _provider_field("deepseek", "base_url")
    together_api_key: SecretStr | None = _provider_field("together", "api_key")
    together_base_url: str = _provider_field("together", "base_url")

    # -- limits and leases (w2-lim) --------------------------------------------------------------
    # Each instance holds its reservations under a lease it renews every third of this; a dead
    # instance's reservations stop counting at most this long after its last renewal.
    reservation_lease_seconds: int = Field(default=30, ge=3, le=3600)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        # Plain scheme names get the async driver SynapGate runs on.
        drivers = {
            "postgresql": "postgresql+asyncpg",
            "postgres": "postgresql+asyncpg",
            "sqlite": "sqlite+aiosqlite",
        }
        name = drivers.get(url.drivername, url.drivername)
        if name not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
            raise ValueError(f"unsupported database {url.drivername!r} (use postgresql:// or sqlite://)")
        return url.set(drivername=name).render_as_string(hide_password=False)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_cluster")
    @classmethod
    def _redis_cluster(cls, value: bool, info: ValidationInfo) -> bool:
        if not value:
            return value
        url = info.data.get("redis_url")
        if not url:
            raise ValueError("needs SYNAPGATE_REDIS_URL (the address of any node of the cluster)")
        if not url.startswith(("redis://", "rediss://")):
            raise ValueError(
                "a cluster is reached over TCP: SYNAPGATE_REDIS_URL must be redis:// or rediss://"
            )
        if url.split("://", 1)[1].split("?", 1)[0].partition("/")[2].strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0: drop the /<db> of SYNAPGATE_REDIS_URL")
        return value

    @field_validator(*(f"{p}_base_url" for p in PROVIDERS))
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 10 or " " in value:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("upstream_timeouts")
    @classmethod
    def _known_providers(cls, value: dict[str, ProviderTimeouts]) -> dict[str, ProviderTimeouts]:
        unknown = sorted(set(value) - set(PROVIDERS))
        if unknown:
            raise ValueError(f"unknown provider {unknown[0]!r} (known: {', '.join(PROVIDERS)})")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def timeouts(self, provider: str) -> tuple[float, float, float]:
        """(connect, read, total) seconds for one provider."""
        own = self.upstream_timeouts.get(provider) or ProviderTimeouts()
        return (
            own.connect or self.upstream_connect_timeout,
            own.read or self.upstream_read_timeout,
            own.total or self.upstream_total_timeout,
        )

    def provider(self, name: str) -> ProviderSettings:
        """The base URL and platform key of one provider; KeyError for a provider SynapGate does not know."""
        if name not in PROVIDER_DEFAULTS:
            raise KeyError(name)
        return ProviderSettings(
            name=name, base_url=getattr(self, f"{name}_base_url"), api_key=getattr(self, f"{name}_api_key")
        )

    # Payments: credit top-ups through Stripe Checkout (storage/payments).
    stripe_api_key: SecretStr | None = Field(
        default=None, description="Stripe secret key (sk_live_…/sk_test_…)."
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret (whsec_…) of the Stripe webhook endpoint or `stripe listen`.",
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com", description="Stripe API base URL (tests point it at a local fake)."
    )
    stripe_success_url: str = Field(
        default="http://127.0.0.1:8080/dashboard/billing?checkout=success",
        description="Where Checkout sends the payer after paying.",
    )
    stripe_cancel_url: str = Field(
        default="http://127.0.0.1:8080/dashboard/billing?checkout=cancelled",
        description="Where Checkout sends the payer who cancels.",
    )
    stripe_min_topup_cents: int = Field(default=500, ge=50, description="Smallest top-up, in US cents.")
    stripe_max_topup_cents: int = Field(default=1_000_000, ge=50, description="Largest top-up, in US cents.")

    # Background jobs and webhook delivery (storage/jobs, storage/webhooks).
    jobs_in_process: bool = Field(
        default=False,
        description="Run the job worker inside `serve` (always so on SQLite, which has no separate worker).",
    )
    webhook_poll_seconds: int = Field(default=2, ge=1, le=60, description="How often the outbox is polled.")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60, description="HTTP timeout per attempt.")
    webhook_backoff_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Shrinks the webhook retry schedule (5 s, 30 s, … for 24 h) by this factor: for tests "
        "and staging only (0.01: retries after 50 ms, 300 ms, … for 14.4 min).",
    )

    # Outages of PostgreSQL and Redis (issue 10: gateway/auth.py, storage/outage.py).
    key_outage_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        le=3600,
        description="While the database is down, keys looked up within this many seconds authenticate.",
    )

    # The durable local spool: serving through a PostgreSQL outage (issue 10: storage/usage/spool.py).
    spool_dir: Path | None = Field(
        default=None,
        description="Where records go (fsynced) while PostgreSQL is unreachable; unset: such requests "
        "get 503. Needs the Redis ledger.",
    )
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=4096,
        description="The spool's size limit; when full, requests are refused with 503 before the upstream "
        "call.",
    )
    spool_instance: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="This instance's spool file name (default: the host name; workers add -1, -2, …).",
    )
    spool_replay_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often the spool is checked for records to replay."
    )

    # Insights (issue 14): automatic tags on the live path.
    auto_tags: bool = Field(
        default=True,
        description="Tag each conversation after its first exchange (offline classifier, off the hot path).",
    )
    auto_tag_queue_size: int = Field(
        default=1000, ge=1, le=100_000, description="Conversations waiting to be tagged; more are skipped."
    )
    tagger_socket: str | None = Field(
        default=None,
        min_length=1,
        description="The Unix socket of the gateway's tagger process (the offline tagging and sentiment "
        "models, kept out of the serving workers); `synapgate serve` starts the process and sets this for "
        "its workers. Unset: an app starts its own on first use.",
    )
    # Insights (issue 14): the LLM tagger and comment sentiment through the gateway's own metered path.
    tagger_model: str | None = Field(
        default=None,
        min_length=1,
        description="A catalog model (e.g. gpt-4o-mini) that tags conversations and judges feedback comments "
        "through the chat service, charged to the platform user; unset: the offline models only.",
    )
    tagger_user: str = Field(
        default="insights-tagger@synapgate.internal",
        min_length=3,
        max_length=320,
        description="Email of the platform user the tagger model's requests are charged to (created when "
        "missing; top it up with credits like any user).",
    )
    tagger_min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Tagger-model answers under this confidence fall back offline."
    )

    # History (issue 15: storage/usage/partitions.py): usage_logs partitioned by month on PostgreSQL.
    usage_partition_months_ahead: int = Field(
        default=3,
        ge=0,
        le=24,
        description="Monthly usage_logs partitions kept ready beyond the current month (PostgreSQL).",
    )
    usage_retention_months: int = Field(
        default=0,
        ge=0,
        le=1200,
        description="Detach usage_logs partitions that ended more than this many months before the current "
        "month (rollups and the ledger stay); 0: keep every month.",
    )
    usage_retention_drop: bool = Field(
        default=False,
        description="Drop the partitions the retention detaches (default: keep them as standalone tables).",
    )


_KNOWN_EXTRA = {f"{ENV_PREFIX}CONFIG"}


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | _KNOWN_EXTRA
    return sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a wrong one raises SettingsError with one line naming the variable.

    A `SYNAPGATE_*` variable SynapGate does not know (a typo, an unknown provider) is an error too:
    a silently ignored setting is worse than a refusal to start.
    """
    unknown = _unknown_variables(os.environ)
    if unknown:
        name = unknown[0]
        hint = ""
        if name.upper().endswith(("_API_KEY", "_BASE_URL")):
            hint = f" (unknown provider; known: {', '.join(PROVIDERS)})"
        raise SettingsError(f"{name}: not a SynapGate setting{hint}")
    toml_path = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if toml_path and not os.path.isfile(toml_path):
        raise SettingsError(f"{ENV_PREFIX}CONFIG: no such file: {toml_path}")
    try:
        return Settings(**overrides)
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise SettingsError(f"{ENV_PREFIX}CONFIG: {toml_path}: {exc}") from None
    except pydantic_settings.SettingsError as exc:  # JSON that does not parse, or an unreadable TOML file
        match = re.search(r'field "(\w+)"', str(exc))
        if match:
            raise SettingsError(f"{ENV_PREFIX}{match.group(1).upper()}: not valid JSON") from None
        raise SettingsError(f"{ENV_PREFIX}CONFIG: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        variable = f"{ENV_PREFIX}{field.upper()}" if field in Settings.model_fields else field
        message = str(err["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"{variable}: {message}") from None
