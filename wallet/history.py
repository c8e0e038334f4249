"""Queries of an account's history.

Its charged usage records, keyset paged by (``occurred_at``, id), and the movements of its ledger
accounts, by posting id. Reads only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

_USAGE_PAGE = text(
    """
    SELECT r.* FROM wallet_usage_records r
    WHERE r.account_id = :a
      AND (CAST(:f AS timestamptz) IS NULL OR r.occurred_at >= :f)
      AND (CAST(:t AS timestamptz) IS NULL OR r.occurred_at < :t)
      AND (CAST(:model AS text) IS NULL OR r.model = :model)
      AND (CAST(:reason AS text) IS NULL OR coalesce(r.reason, 'billed') = :reason)
      AND (CAST(:auth AS text) IS NULL OR r.authorization_id = :auth)
      AND (CAST(:after_at AS timestamptz) IS NULL OR (r.occurred_at, r.id) > (:after_at, :after))
    ORDER BY r.occurred_at, r.id
    LIMIT :n
    """
)

_STATEMENT_PAGE = text(
    """
    SELECT p.id, p.entry_id, p.amount, p.phase, p.unit, a.code, a.type,
           e.effective_at, e.created_at, e.kind, e.description
    FROM ledger_postings p
    JOIN ledger_accounts a ON a.id = p.account_id
    JOIN ledger_entries e ON e.id = p.entry_id
    WHERE p.account_id = ANY(CAST(:ids AS bigint[]))
      AND (CAST(:after AS bigint) IS NULL OR p.id > :after)
      AND (CAST(:f AS timestamptz) IS NULL OR e.effective_at >= :f)
      AND (CAST(:t AS timestamptz) IS NULL OR e.effective_at < :t)
    ORDER BY p.id
    LIMIT :n
    """
)


@dataclass(frozen=True)
class UsageFilter:
    """Which usage records to list; a field left None matches any.

    Records that occurred in [``since``, ``until``), of ``model``, with credit ``reason``
    (``billed``: billed in full), under ``authorization_id``.
    """

    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    reason: str | None = None
    authorization_id: str | None = None


def usage_cursor(db: Session, account_id: str, record_id: str) -> datetime | None:
    """When the account's record ``record_id`` occurred (a page's cursor).

    None if it has none of that id.
    """
    return db.scalar(  # type: ignore[no-any-return]
        text(
            "SELECT max(occurred_at) FROM wallet_usage_records WHERE account_id = :a AND id = :id"
        ),
        {"a": account_id, "id": record_id},
    )


def usage_page(
    db: Session,
    account_id: str,
    where: UsageFilter,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """Up to ``limit + 1`` of the account's records matching ``where``, in (occurred_at, id).

    They start after the (occurred_at, id) ``after``; the extra row says there is another page.
    """
    after_at, after_id = after if after is not None else (None, None)
    return db.execute(
        _USAGE_PAGE,
        {
            "a": account_id,
            "f": where.since,
            "t": where.until,
            "model": where.model,
            "reason": where.reason,
            "auth": where.authorization_id,
            "after_at": after_at,
            "after": after_id,
            "n": limit + 1,
        },
    ).all()


def statement_page(
    db: Session,
    owner_id: str,
    ledger_code: str | None,
    *,
    since: datetime | None,
    until: datetime | None,
    after: int | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """Up to ``limit + 1`` postings of the account's ledger accounts after posting ``after``.

    Only of ``ledger_code`` when given, their entry effective in [``since``, ``until``), with
    each posting's account code and type and its entry's times, kind and description.
    """
    codes = db.execute(
        text("SELECT id, code FROM ledger_accounts WHERE owner_id = :a"), {"a": owner_id}
    ).all()
    ids = [r.id for r in codes if ledger_code is None or r.code == ledger_code]
    return db.execute(
        _STATEMENT_PAGE,
        {"ids": ids, "after": after, "f": since, "t": until, "n": limit + 1},
    ).all()


#: the key of each grouping of :func:`summed_usage`, as SQL over ``wallet_usage_records``
_TOTALS_KEYS = {
    "model": "model",
    "day": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "reason": "coalesce(reason, 'billed')",
}


def summed_usage(
    db: Session,
    account_id: str,
    group_by: str,
    *,
    since: datetime | None,
    until: datetime | None,
) -> Sequence[Row[Any]]:
    """The account's usage in [``since``, ``until``) summed per model, UTC day or reason code.

    Each row: ``key``, ``n`` records, tokens ``i`` (input, audio and image), ``o`` (output),
    ``cr`` (cache reads), ``cw`` (cache writes of every duration), and money atoms ``rated``,
    ``billed``, ``credited``; by key.

    Args:
        db: the caller's session (read only).
        account_id: the account.
        group_by: ``model``, ``day`` or ``reason`` (a record billed in full: ``billed``).
        since: from this instant (None: from the first record).
        until: before this instant (None: to the last).
    """
    return db.execute(
        text(
            f"SELECT {_TOTALS_KEYS[group_by]} AS key, count(*) AS n,"  # noqa: S608 (a constant key)
            " sum(input_tokens + input_audio_tokens + input_image_tokens) AS i,"
            " sum(output_tokens) AS o, sum(cache_read_tokens) AS cr,"
            " sum(cache_write_5m_tokens + cache_write_30m_tokens + cache_write_1h_tokens"
            " + cache_write_12h_tokens) AS cw,"
            " sum(rated) AS rated, sum(billed) AS billed, sum(credited) AS credited"
            " FROM wallet_usage_records WHERE account_id = :a"
            " AND (CAST(:f AS timestamptz) IS NULL OR occurred_at >= :f)"
            " AND (CAST(:t AS timestamptz) IS NULL OR occurred_at < :t)"
            " GROUP BY 1 ORDER BY 1"
        ),
        {"a": account_id, "f": since, "t": until},
    ).all()
