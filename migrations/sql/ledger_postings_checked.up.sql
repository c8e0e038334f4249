-- The posting trigger checks, once per statement, what two foreign keys checked once per row
-- (migration 0009): every new posting names an entry written by this transaction, and an
-- account that exists with the posting's unit and book. Same guarantee, a fraction of the cost
-- on thousand-posting batches; accounts and entries are never deleted (they are append-only),
-- so there is nothing left for a foreign key to protect.
ALTER TABLE ledger_postings DROP CONSTRAINT fk_ledger_postings_account;
ALTER TABLE ledger_postings DROP CONSTRAINT fk_ledger_postings_entry_id_ledger_entries;

CREATE OR REPLACE FUNCTION ledger_postings_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named integer;
    found integer;
BEGIN
    IF EXISTS (
        SELECT 1 FROM (SELECT DISTINCT entry_id FROM new_postings) p
        LEFT JOIN ledger_entries e ON e.id = p.entry_id
        WHERE e.id IS NULL OR e.created_at <> now()
    ) THEN
        RAISE EXCEPTION 'postings may only be added to an entry created in the same transaction'
            USING ERRCODE = 'raise_exception', HINT = 'tw:entry_sealed';
    END IF;

    SELECT count(*) INTO named FROM (SELECT DISTINCT account_id, unit, book FROM new_postings) p;
    SELECT count(*) INTO found
    FROM (SELECT DISTINCT account_id, unit, book FROM new_postings) p
    JOIN ledger_accounts a ON a.id = p.account_id AND a.unit = p.unit AND a.book = p.book;
    IF found <> named THEN
        RAISE EXCEPTION 'a posting names a ledger account that does not exist in its unit and book'
            USING ERRCODE = 'foreign_key_violation', HINT = 'tw:unknown_account';
    END IF;

    PERFORM 1 FROM ledger_accounts
    WHERE id IN (SELECT DISTINCT account_id FROM new_postings) AND track_balance
    ORDER BY id FOR NO KEY UPDATE;

    UPDATE ledger_accounts a SET
        debits_posted   = a.debits_posted   + s.dp,
        credits_posted  = a.credits_posted  + s.cp,
        debits_pending  = a.debits_pending  + s.dpend,
        credits_pending = a.credits_pending + s.cpend,
        version         = a.version + 1
    FROM (
        SELECT account_id,
            sum(CASE WHEN phase = 0 AND amount > 0 THEN amount ELSE 0 END) AS dp,
            sum(CASE WHEN phase = 0 AND amount < 0 THEN -amount ELSE 0 END) AS cp,
            sum(CASE WHEN phase = 1 AND amount > 0 THEN amount
                     WHEN phase = 2 AND amount < 0 THEN amount ELSE 0 END) AS dpend,
            sum(CASE WHEN phase = 1 AND amount < 0 THEN -amount
                     WHEN phase = 2 AND amount > 0 THEN -amount ELSE 0 END) AS cpend
        FROM new_postings GROUP BY account_id
    ) s
    WHERE a.id = s.account_id AND a.track_balance;
    RETURN NULL;
END $$;
