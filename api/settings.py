"""Settings from the environment (the only place that reads it)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration. Every field can be set by an environment variable of its name."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; unset starts the embedded PostgreSQL in TOKENWALLET_DATA_DIR",
    )
    tokenwallet_data_dir: Path = Field(
        default=Path(".tokenwallet"),
        description="where the embedded PostgreSQL keeps its data (pgdata/ inside)",
    )
    tokenwallet_db_pool_size: int = Field(default=10, ge=1, le=200)
    #: gateway groups in flight at once per process (each holds a connection while it runs)
    tokenwallet_gateway_threads: int = Field(default=4, ge=1, le=64)
    tokenwallet_hold_ttl_seconds: int = Field(default=600, ge=1)
    tokenwallet_hold_expiry_interval_seconds: int = Field(default=30, ge=1)
    tokenwallet_webhook_interval_seconds: int = Field(default=10, ge=1)
    tokenwallet_usage_retention_days: int = Field(
        default=70,
        ge=36,
        le=3650,
        description="usage older than this is refused; record ids are remembered this long",
    )
    tokenwallet_idempotency_key_retention_hours: int = Field(
        default=72, ge=1, description="how long a POST's Idempotency-Key replays its response"
    )
    tokenwallet_log_level: str = "INFO"
    tokenwallet_access_log: bool = Field(
        default=True, description="one JSON line per request on stderr (whatever the log level)"
    )
    tokenwallet_access_log_gateway_sample: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="access log: one in N successful gateway calls (errors always); 1 logs all",
    )
    tokenwallet_ledger_audit_interval_seconds: int = Field(
        default=86400, ge=300, description="how often the scheduler re-derives the invariants"
    )
    tokenwallet_billing_grace_hours: int = Field(
        default=24, ge=0, le=24 * 27, description="hours after a month ends before it is closed"
    )
    tokenwallet_billing_close_check_seconds: int = Field(
        default=3600, ge=60, description="how often the scheduler checks for a period to close"
    )
    tokenwallet_paid_credit_expiry_allowed: bool = Field(
        default=False,
        description="the operator's terms let paid credit expire: bank top-ups may then carry"
        " paid_expires_in_days (its unspent part is booked to revenue:breakage at expiry)",
    )
    tokenwallet_invoice_issuer_name: str = "tokenwallet operator"
    tokenwallet_invoice_issuer_address: str | None = None
    tokenwallet_invoice_issuer_tax_id: str | None = None
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_success_url: str = Field(
        default="http://localhost:8000/payments/success?session_id={CHECKOUT_SESSION_ID}",
        description="where Stripe Checkout sends the customer after paying (per-request override)",
    )
    stripe_cancel_url: str = Field(
        default="http://localhost:8000/payments/canceled",
        description="where Stripe Checkout sends the customer who gives up",
    )
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    stripe_reconcile_interval_seconds: int = Field(default=21600, ge=60)
    stripe_event_retry_interval_seconds: int = Field(default=300, ge=10)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
