"""One settings object for the whole product, read from the environment (and `.env`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


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
        default=0.05, gt=0, lt=1, description="family-wise significance over the horizons"
    )
    log_level: str = "INFO"
    log_json: bool = True
    admin_api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for /api/v1/admin until user roles exist; unset = disabled.",
    )
    cors_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _refuse_weak_admin_token(self) -> Self:
        token = self.admin_api_token
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("ADMIN_API_TOKEN must be at least 16 characters")
        return self

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()
