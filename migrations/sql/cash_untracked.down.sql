-- Cash accounts keep a cached balance again: counters recomputed from their postings.

ALTER TABLE ledger_accounts DISABLE TRIGGER ledger_accounts_guard;

UPDATE ledger_accounts a
SET track_balance = true,
    debits_posted = s.dp, credits_posted = s.cp, debits_pending = s.dpe, credits_pending = s.cpe
FROM (
    SELECT a2.id,
           coalesce(sum(CASE WHEN p.phase = 0 AND p.amount > 0 THEN p.amount ELSE 0 END), 0) AS dp,
           coalesce(sum(CASE WHEN p.phase = 0 AND p.amount < 0 THEN -p.amount ELSE 0 END), 0) AS cp,
           coalesce(sum(CASE WHEN p.phase = 1 AND p.amount > 0 THEN p.amount
                             WHEN p.phase = 2 AND p.amount < 0 THEN p.amount ELSE 0 END), 0) AS dpe,
           coalesce(sum(CASE WHEN p.phase = 1 AND p.amount < 0 THEN -p.amount
                             WHEN p.phase = 2 AND p.amount > 0 THEN -p.amount ELSE 0 END), 0) AS cpe
    FROM ledger_accounts a2 LEFT JOIN ledger_postings p ON p.account_id = a2.id
    WHERE a2.owner_id IS NULL AND a2.code LIKE 'cash:%' AND a2.code <> 'cash:stripe_disputed'
    GROUP BY a2.id
) s
WHERE a.id = s.id;

ALTER TABLE ledger_accounts ENABLE TRIGGER ledger_accounts_guard;
