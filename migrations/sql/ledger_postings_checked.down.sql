ALTER TABLE ledger_postings ADD CONSTRAINT fk_ledger_postings_account
    FOREIGN KEY (account_id, unit, book) REFERENCES ledger_accounts (id, unit, book);
ALTER TABLE ledger_postings ADD CONSTRAINT fk_ledger_postings_entry_id_ledger_entries
    FOREIGN KEY (entry_id) REFERENCES ledger_entries (id);

CREATE OR REPLACE FUNCTION ledger_postings_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM new_postings p JOIN ledger_entries e ON e.id = p.entry_id
        WHERE e.created_at <> now()
    ) THEN
        RAISE EXCEPTION 'postings may only be added to an entry created in the same transaction'
            USING ERRCODE = 'raise_exception', HINT = 'tw:entry_sealed';
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
