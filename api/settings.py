"""One settings object for the whole product, read from the environment (and `.env`)."""

from __future__ import annotations

import ipaddress
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts import Family, absolute_tracking_uri

MIN_SECRET_CHARS = 32


def weak_secret(value: str) -> bool:
    """Too short, or too repetitive to be random (`"x" * 40`, a word repeated)."""
    return len(value) < MIN_SECRET_CHARS or len(set(value)) < 12


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class OAuthProvider(BaseModel):
    """One social or OIDC sign-in provider. `github` and `google` need only the client id and
    secret (their endpoints are built in); any OIDC issuer works with `server_metadata_url`."""

    client_id: str
    client_secret: SecretStr
    server_metadata_url: str | None = Field(
        default=None, description="OIDC discovery document (…/.well-known/openid-configuration)"
    )
    authorize_url: str | None = None
    token_url: str | None = None
    userinfo_url: str | None = None
    emails_url: str | None = Field(
        default=None, description="GitHub-style list of the account's verified addresses"
    )
    scope: str = "openid email profile"


class Settings(BaseSettings):
    """Runtime configuration. Unset service URLs mean "start the embedded server"."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Field(
        default=Path(".stockcopilot"),
        validation_alias="STOCKCOPILOT_DATA_DIR",
        description="Folder for embedded Postgres/Redis data; one place to back up or delete.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    database_url: str | None = Field(
        default=None, description="postgresql:// DSN; unset starts the embedded server."
    )
    redis_url: str | None = Field(
        default=None, description="redis:// or unix:// URL; unset starts the embedded server."
    )
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    mlflow_tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    prediction_cache_ttl_s: int = Field(
        default=86_400,
        ge=1,
        description="keys carry version and as-of date, so the TTL only bounds memory",
    )
    alias_poll_s: float = Field(default=30.0, gt=0, description="how often aliases are re-read")
    rollback_error_rate: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="a newly aliased version failing more than this share of its probation "
        "requests is rolled back",
    )
    rollback_latency_slo_ms: float = Field(
        default=2_000.0,
        gt=0,
        description="p95 latency of a model replica's forecast call a new version must keep",
    )
    rollback_min_requests: int = Field(
        default=20, ge=1, description="requests seen before error rate or latency can judge"
    )
    rollback_probation_requests: int = Field(
        default=500, ge=1, description="requests a new version is watched for errors and latency"
    )
    rollback_live_window_s: float = Field(
        default=14 * 86_400.0,
        gt=0,
        description="how long after a promotion the previous champion is shadow-scored and the "
        "new one rolled back if it loses significantly on live outcomes",
    )
    rollback_live_alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="family-wise significance over the horizons of the live guards (strict: "
        "on live-length samples the DM test rejects equal models far more often than its level)",
    )
    log_level: str = "INFO"
    log_json: bool = Field(
        default=False,
        description="JSON log lines on stderr (containers, ELK); otherwise JSON to the data "
        "folder's logs/stockcopilot.log and concise progress on the console",
    )
    cors_origins: list[str] = Field(default_factory=list)
    # --- accounts and security (api.security). Unset keys come from the data folder's key file,
    # generated on first start (api.security.keyfile); production requires them all.
    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 signing key for access tokens (≥ 32 characters)"
    )
    access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=3_600)
    session_cache_s: int = Field(
        default=60,
        ge=1,
        le=3_600,
        description="how long Redis caches a live session and its role: a demoted "
        "administrator or a session ended during a Redis outage lasts at most this long",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description='JSON {"key id": "base64url 32-byte key", ...}: AES-256-GCM keyring',
    )
    encryption_active_key: str | None = Field(
        default=None, description="key id new ciphertexts use (default: the greatest id)"
    )
    blind_index_key: SecretStr | None = Field(
        default=None, description="base64url 32-byte HMAC key for e-mail lookup; never rotated"
    )
    oauth_providers: dict[str, OAuthProvider] = Field(
        default_factory=dict,
        description='JSON {"github": {"client_id": ..., "client_secret": ...}, ...}',
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="where browsers reach the API; OAuth callbacks and e-mailed links use it",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="addresses or CIDR networks of the reverse proxies in front of the API: "
        "only their X-Forwarded-For is believed (default: none, the peer is the client)",
    )
    rate_limit_default_per_min: int = Field(default=120, ge=1)
    rate_limit_auth_per_min: int = Field(default=10, ge=1)
    login_lockout_after: int = Field(
        default=5,
        ge=1,
        description="failed logins to one account from one address before that address is "
        "locked out of that account for a while",
    )
    login_lockout_base_s: int = Field(
        default=30, ge=1, description="first lockout; doubles with every further failure, ≤ 1 h"
    )
    login_account_ceiling: int = Field(
        default=100,
        ge=1,
        description="failed logins to one account from all addresses within an hour before "
        "the account refuses passwords for the rest of that hour (a distributed guess)",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="larger request bodies get 413 unread"
    )
    max_upload_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="the limit for CSV imports (bars and transactions) instead",
    )
    echo_request_id: bool = Field(
        default=True,
        description="answer with the request id; off behind Ray Serve's proxy, which echoes "
        "the same id itself",
    )
    docs_enabled: bool = Field(
        default=True, description="serve /docs, /redoc and /openapi.json (turn off in production)"
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="bearer token Prometheus sends to /metrics (≥ 32 characters); unset in "
        "production: /metrics is off",
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description="smtps://user:pass@host:465 (TLS) or smtp://user:pass@host:587 (STARTTLS); "
        "unset: account e-mails are only logged, links masked",
    )
    mail_from: str = Field(
        default="Stock Copilot <no-reply@localhost>", description="sender of every e-mail"
    )
    smtp_timeout_s: float = Field(default=15.0, gt=0)

    # market feed and live updates
    feed_mode: Literal["replay", "live", "off"] = Field(
        default="replay",
        description="replay: stored bars played as if live; live: poll the live provider; off",
    )
    feed_replay_start: date | None = Field(
        default=None, description="first replayed day (default: a year before the newest bar)"
    )
    feed_interval_s: float = Field(
        default=3.0, gt=0, description="replay: seconds per trading day; live: poll interval"
    )
    feed_loop: bool = Field(default=True, description="replay: start over after the newest bar")
    feed_forecast_family: Family | None = Field(
        default="garch",
        description="the family the feed forecasts every instrument with after each session "
        "by the champion and the challenger; empty or `none`: only requests make forecasts",
    )
    market_data_provider: Literal["yfinance", "tiingo"] = Field(
        default="yfinance",
        description="live bars and `data update`: yfinance (no key) or tiingo (TIINGO_API_KEY)",
    )
    tiingo_api_key: SecretStr | None = Field(
        default=None, description="Tiingo API token (https://www.tiingo.com/account/api/token)"
    )
    tiingo_base_url: str = Field(
        default="https://api.tiingo.com", description="Tiingo REST endpoint (tests: a local one)"
    )
    market_data_catch_up: bool = Field(
        default=True,
        description="`stockcopilot up` runs `data update` first when the provider answers",
    )
    feed_poll_s: float = Field(
        default=300.0, gt=0, description="live: seconds between polls while the market is open"
    )
    feed_lease_s: float = Field(
        default=15.0, gt=1, description="one ingress replica runs the feed, under this lease"
    )
    ws_heartbeat_s: float = Field(default=20.0, gt=0, description="WebSocket heartbeat period")
    ws_auth_timeout_s: float = Field(
        default=10.0, gt=0, description="time to send credentials after connecting"
    )
    ws_queue_limit: int = Field(
        default=256,
        ge=8,
        description="undelivered messages a slow client may owe before it is "
        "disconnected (quotes and predictions are coalesced per ticker and do not count)",
    )
    ws_max_tickers: int = Field(default=100, ge=1, description="subscriptions per connection")
    alerts_max_per_user: int = Field(default=100, ge=1)

    # chat (api.services.chat): TogetherAI first, OpenAI as backup, a local responder otherwise
    together_api_key: SecretStr | None = Field(
        default=None, description="server key; a user's own stored key is preferred"
    )
    together_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint (default: TogetherAI's)"
    )
    together_model: str = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = Field(default=None, description="default: OpenAI's, with /v1")
    openai_model: str = "gpt-4o-mini"
    chat_timeout_s: float = Field(default=20.0, gt=0, description="per provider call")
    chat_max_retries: int = Field(
        default=1, ge=0, le=5, description="SDK retries (with backoff) of a failed provider call"
    )
    chat_breaker_failures: int = Field(
        default=3, ge=1, description="consecutive provider failures that open its circuit"
    )
    chat_breaker_reset_s: float = Field(
        default=60.0, gt=0, description="an open circuit lets one trial call through after this"
    )
    chat_max_input_chars: int = Field(default=4_000, ge=1, le=100_000)
    chat_daily_token_quota: int = Field(
        default=200_000, ge=0, description="provider tokens per user per UTC day"
    )
    chat_retention_days: int = Field(
        default=90, ge=1, description="chat messages older than this are purged"
    )
    chat_max_tool_rounds: int = Field(
        default=4, ge=1, le=10, description="model ↔ tool round trips per answer"
    )
    chat_link_hosts: list[str] = Field(
        default_factory=lambda: ["sec.gov", "investor.gov", "finra.org"],
        description="hosts (and their subdomains) answers may link to; other links are removed",
    )

    # operations
    sentry_dsn: SecretStr | None = Field(
        default=None, description="report errors to Sentry (personal data scrubbed) when set"
    )
    sentry_traces_sample_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of requests traced to Sentry"
    )

    _absolute_registry = field_validator("mlflow_tracking_uri")(absolute_tracking_uri)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):  # TRUSTED_PROXIES=10.0.0.0/8,192.168.1.7
            value = [part.strip() for part in value.split(",") if part.strip()]
        for entry in value if isinstance(value, list) else ():
            ipaddress.ip_network(entry, strict=False)  # ValueError names a malformed entry
        return value

    @field_validator("feed_forecast_family", mode="before")
    @classmethod
    def _no_family(cls, value: object) -> object:
        """FEED_FORECAST_FAMILY= (empty), `none` or `off`: the feed makes no forecasts."""
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Self:
        for name in ("jwt_secret", "metrics_token"):
            value: SecretStr | None = getattr(self, name)
            if value is not None and weak_secret(value.get_secret_value()):
                raise ValueError(
                    f"{name.upper()} must be at least {MIN_SECRET_CHARS} characters of random "
                    "text (e.g. `openssl rand -base64 48`)"
                )
        if self.environment == Environment.PRODUCTION and self.jwt_secret is None:
            raise ValueError("JWT_SECRET must be set in production")
        if self.market_data_provider == "tiingo" and self.tiingo_api_key is None:
            raise ValueError(
                "MARKET_DATA_PROVIDER=tiingo needs TIINGO_API_KEY (a free key: "
                "https://www.tiingo.com/account/api/token)"
            )
        return self

    @property
    def signing_key(self) -> str:
        """The access-token key (see api.security.keyfile for where it comes from)."""
        if self.jwt_secret is None:
            raise ValueError(
                "no JWT signing key: set JWT_SECRET, or start through `stockcopilot`, which "
                "keeps generated keys in the data folder"
            )
        return self.jwt_secret.get_secret_value()

    @property
    def app_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("stock-copilot")
        except PackageNotFoundError:
            return "0.0.0"

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def log_file(self) -> Path | None:
        """Where JSON log lines go when they are not on stderr (`log_json` false)."""
        return None if self.log_json else self.resolved_data_dir / "logs" / "stockcopilot.log"
