"""Charging usage: the service entry point of the usage path, and token parsing.

A batch of records is charged by :func:`wallet.gateway.execute` (one transaction, two round
trips): claim the record ids (exactly once), rate each record at the account's price in force at
``occurred_at``, apply the failed-request policy, burn down in the account's order (or capture
the authorization a record names), then write the lots, the records and one ledger entry per
book. A record that cannot be paid is rejected and its id stays unclaimed (retryable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from wallet.accounts import EVERYTHING, Scope
from wallet.gateway import MAX_BATCH, ChargeUsage, UsageResult, run_one
from wallet.maintenance import DEFAULT_RETENTION
from wallet.normalize import Tokens, parse_usage
from wallet.records import Rejected, UsageIn

__all__ = ["MAX_BATCH", "Rejected", "UsageIn", "UsageResult", "charge_batch", "parse_tokens"]


def charge_batch(
    session: Session,
    records: Sequence[UsageIn | Rejected],
    *,
    now: datetime | None = None,
    scope: Scope = EVERYTHING,
    retention: timedelta = DEFAULT_RETENTION,
) -> list[UsageResult]:
    """Charge a batch of usage records; the caller commits.

    Args:
        session: the caller's transaction.
        records: parsed records, or records already rejected by parsing (answered as such).
        now: the instant of the charge (default: the database clock after the batch's locks).
        scope: accounts outside it are unknown to the caller.
        retention: records that occurred longer ago than this are refused (``usage_too_old``):
            their ids may no longer be remembered, so exactly-once could not be promised.

    Returns:
        One result per input record, in the same order.
    """
    results: list[UsageResult] = run_one(session, ChargeUsage(records, scope, retention), now=now)
    return results


def parse_tokens(
    *,
    fields: Mapping[str, Any] | None,
    openai_usage: Mapping[str, Any] | None = None,
    anthropic_usage: Mapping[str, Any] | None = None,
    **provider: Mapping[str, Any] | None,
) -> Tokens:
    """Tokens from canonical fields or one provider object.

    See :func:`wallet.normalize.parse_usage`, which also reads the outcome from whole objects.

    Raises:
        InvalidUsage: none or several sources, or bad counts.
    """
    sent = {"openai_usage": openai_usage, "anthropic_usage": anthropic_usage, **provider}
    return parse_usage(dict(fields or {}), {k: v for k, v in sent.items() if v is not None}).tokens
