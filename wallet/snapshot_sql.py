"""The statements of the gateway path's first round trip (:func:`wallet.snapshot.load`).

Every statement reads one JSON parameter ``%(p)s`` of id lists; they run pipelined in this
order: the gates and catalog locks (:data:`GATE_AND_CATALOG`), the record ids claimed
(:data:`CLAIM`), the account rows locked (:data:`ACCOUNTS`), the authorizations locked
(:data:`AUTHS`) and everything else, unlocked, as one JSON document (:data:`STATE`).
"""

from __future__ import annotations

# The accounts of the batch with the resellers of sub-accounts (repeated in the statements
# that need it; the rows are locked by the first statement that reads them).
#: The batch's parameters, decoded once per statement: one JSON document of id lists.
_ARGS = """
args AS (
    SELECT tw_texts(d -> 'accounts') AS accounts, tw_texts(d -> 'auths') AS auths,
           tw_texts(d -> 'gated') AS gated, tw_texts(d -> 'ids') AS ids,
           tw_texts(d -> 'claim_accounts') AS claim_accounts, tw_texts(d -> 'cached') AS cached
    FROM (SELECT %(p)s::jsonb AS d) j
)"""


_FAMILY = (
    "WITH"  # noqa: S608 (constant SQL fragments: no input is ever interpolated)
    + _ARGS
    + """, want AS (
    SELECT ARRAY(
        SELECT unnest((SELECT accounts FROM args))
        UNION SELECT account_id FROM wallet_authorizations
        WHERE id = ANY((SELECT auths FROM args)::text[])
    ) AS ids
), fam AS (
    SELECT w.ids || ARRAY(
        SELECT DISTINCT parent_id FROM wallet_accounts
        WHERE id = ANY(w.ids) AND parent_id IS NOT NULL
    ) AS ids
    FROM want w
)
"""
)
#: the family's ids as an array (``= ANY`` keeps every lookup on an index)
_FAM = "ANY((SELECT ids FROM fam)::text[])"

GATE_AND_CATALOG = (
    "WITH"  # noqa: S608 (constant SQL fragments: no input is ever interpolated)
    + _ARGS
    + """, gate AS (
    SELECT count(*) AS n, clock_timestamp() AS at FROM (
        SELECT pg_advisory_xact_lock_shared(k) FROM (
            SELECT k, row_number() OVER (ORDER BY k) AS i FROM (
                SELECT DISTINCT tw_lock_key('usage-gate', coalesce(a.parent_id, a.id)) AS k
                FROM wallet_accounts a WHERE a.id = ANY((SELECT gated FROM args)::text[])
            ) d
        ) keys ORDER BY i
    ) s
)
SELECT gate.at, (
    SELECT json_agg(json_build_array(w.currency, w.catalog_version, w.priced_through_at)
                    ORDER BY w.currency)
    FROM rating_watermarks w,
         LATERAL (SELECT pg_advisory_xact_lock_shared(tw_lock_key('catalog', w.currency))) l
) AS catalog
FROM gate
"""
)

CLAIM = (
    "WITH"  # noqa: S608 (constant SQL fragments: no input is ever interpolated)
    + _ARGS
    + """, c AS (
    INSERT INTO wallet_usage_claims (id, account_id)
    SELECT i, a
    FROM unnest((SELECT ids FROM args), (SELECT claim_accounts FROM args)) AS t(i, a)
    ORDER BY i
    ON CONFLICT DO NOTHING RETURNING id
)
SELECT c.id, true AS claimed, NULL::text AS account_id, NULL::text AS currency,
       NULL::numeric AS billed, NULL::numeric AS credited, NULL::text AS reason
FROM c
UNION ALL
SELECT r.id, false, r.account_id, r.currency, r.billed, r.credited, r.reason
FROM wallet_usage_records r
WHERE r.id = ANY(ARRAY(SELECT unnest((SELECT ids FROM args)) EXCEPT SELECT id FROM c))
"""
)

ACCOUNTS = (
    _FAMILY
    + f"""
SELECT a.id, a.kind, a.parent_id, a.currency, a.credit_limit, a.failed_request_policy_id,
       nullif(a.discounts::text, '[]'), a.burn_order::text, a.low_balance_threshold, a.status
FROM wallet_accounts a WHERE a.id = {_FAM}
ORDER BY a.id FOR NO KEY UPDATE
"""  # noqa: S608 (the f-string inserts only the constants above)
)

AUTH_COLUMNS = (
    "id",
    "account_id",
    "reseller_account_id",
    "model",
    "multi_capture",
    "token_grant",
    "status",
    "decline_code",
    "requested",
    "held_money",
    "held_tokens",
    "captured_money",
    "captured_tokens",
    "released_money",
    "released_tokens",
    "captures",
    "final",
    "plan_covered",
    "overage",
    "reserved",
    "reserved_quota",
    "reseller_overage",
    "hold_entry_id",
    "usage_record_id",
    "expires_at",
    "resolved_at",
    "created_at",
)

AUTHS = (
    "WITH"  # noqa: S608 (constant SQL fragments: no input is ever interpolated)
    + _ARGS
    + f"""
SELECT {", ".join(AUTH_COLUMNS)} FROM wallet_authorizations
WHERE id = ANY((SELECT auths FROM args)::text[]) ORDER BY id FOR UPDATE
"""  # noqa: S608 (the f-string inserts only the constants above)
)

# Everything else, read under the locks above, as one JSON document (one statement to send,
# one row to decode).
STATE = (
    _FAMILY  # noqa: S608 (constant SQL fragments: no input is ever interpolated)
    + f"""
SELECT json_build_object(
    'lots', (
        SELECT json_agg(json_build_array(id, account_id, kind, remaining, reserved, granted,
                                         priority, expires_at, models, price, deferred,
                                         ledger_account_id, valid_from))
        FROM (
            SELECT * FROM wallet_credit_lots WHERE account_id = {_FAM} AND remaining > 0
            UNION
            SELECT * FROM wallet_credit_lots WHERE id = ANY(ARRAY(
                SELECT (e ->> 0)::bigint
                FROM wallet_authorizations a, jsonb_array_elements(a.reserved) e
                WHERE a.id = ANY((SELECT auths FROM args)::text[])
            ))
        ) l
    ),
    'windows', (
        SELECT json_agg(json_build_array(s.account_id, s.id, s.plan_id, w.id, w.kind, w.unit,
                                         w."limit", w.window_start, w.window_end, w.used,
                                         s.created_at, s.current_period_end)
                        ORDER BY w.id)
        FROM wallet_subscriptions s LEFT JOIN wallet_quota_windows w ON w.subscription_id = s.id
        WHERE s.account_id = {_FAM} AND s.status = 'active'
    ),
    -- only accounts with a credit limit can draw overage, so only theirs is read
    'credit', (
        SELECT json_agg(json_build_array(owner_id, atoms)) FROM (
            SELECT owner_id, sum(atoms) AS atoms FROM (
                SELECT owner_id, debits_posted - credits_posted + debits_pending AS atoms
                FROM ledger_accounts
                WHERE owner_id = ANY(ARRAY(
                        SELECT id FROM wallet_accounts WHERE id = {_FAM} AND credit_limit > 0
                      ))
                  AND code IN ('receivable:unbilled', 'receivable:invoiced',
                               'receivable:reversals')
                UNION ALL
                SELECT account_id, overage FROM wallet_authorizations
                WHERE status = 'approved' AND overage > 0 AND account_id = {_FAM}
                UNION ALL
                SELECT reseller_account_id, reseller_overage FROM wallet_authorizations
                WHERE status = 'approved' AND reseller_overage > 0
                  AND reseller_account_id = {_FAM}
            ) x GROUP BY owner_id
        ) y
    ),
    'policies', (
        SELECT json_agg(json_build_array(id, version, created_at, provider_error,
                                         provider_truncation, refusal, client_disconnect,
                                         empty_completion))
        FROM (
            SELECT DISTINCT ON (p.id) p.* FROM catalog_failed_request_policies p
            WHERE p.id = ANY(ARRAY(
                SELECT failed_request_policy_id FROM wallet_accounts WHERE id = {_FAM}
            ))
            ORDER BY p.id, p.version DESC
        ) p
    ),
    'ledgers', (
        SELECT json_agg(json_build_array(owner_id, code, id, unit, book, type, forbid_negative,
                                         track_balance, age(xmin) > 0))
        FROM ledger_accounts
        WHERE owner_id = ANY(ARRAY(
            SELECT unnest((SELECT ids FROM fam)) EXCEPT SELECT unnest((SELECT cached FROM args))
        ))
          AND code IN ('customer:prepaid', 'customer:bonus', 'customer:package_tokens',
                       'deferred:packages', 'deferred:subscriptions', 'receivable:unbilled')
    ),
    -- one journal entry per book per batch; ids are taken up front so postings can name them
    'entry_ids', (
        SELECT json_agg(nextval(pg_get_serial_sequence('ledger_entries', 'id')))
        FROM generate_series(1, (
            SELECT count(DISTINCT coalesce(parent_id, '')) FROM wallet_accounts
            WHERE id = {_FAM}
        ))
    )
)::text
"""  # noqa: S608 (the f-string inserts only the constants above)
)
