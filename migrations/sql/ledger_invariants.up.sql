-- Ledger invariants enforced by PostgreSQL itself. Applied by migration 0001.

-- 1. Entries get the transaction's timestamp; a posting may only join an entry written by the
--    same transaction (entries are sealed once committed).
CREATE FUNCTION ledger_entries_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_entries_stamp BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_stamp();

-- 2. Append-only: entries and postings are never updated, deleted or truncated.
CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only: % on % is not allowed; post a reversing entry',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'raise_exception', HINT = 'tw:append_only';
END $$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_postings_append_only BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_postings_no_truncate BEFORE TRUNCATE ON ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

-- 3. Cached balances move only with postings: one statement-level trigger folds every new
--    posting into its account's counters, locking the accounts in id order first.
CREATE FUNCTION ledger_postings_apply() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER ledger_postings_apply AFTER INSERT ON ledger_postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_postings_apply();

-- 4. Nobody but the posting trigger may touch the cached counters; an account's identity
--    (unit, book, type, balance tracking) never changes.
CREATE FUNCTION ledger_accounts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.debits_posted, NEW.credits_posted, NEW.debits_pending, NEW.credits_pending, NEW.version)
        IS DISTINCT FROM
       (OLD.debits_posted, OLD.credits_posted, OLD.debits_pending, OLD.credits_pending, OLD.version)
       AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'cached balances of ledger account % change only through postings', OLD.id
            USING ERRCODE = 'raise_exception', HINT = 'tw:cached_balance';
    END IF;
    IF (NEW.id, NEW.unit, NEW.book, NEW.type, NEW.track_balance, NEW.code, NEW.owner_id)
        IS DISTINCT FROM
       (OLD.id, OLD.unit, OLD.book, OLD.type, OLD.track_balance, OLD.code, OLD.owner_id) THEN
        RAISE EXCEPTION 'the identity of ledger account % (unit, book, type, code, owner) is fixed',
            OLD.id USING ERRCODE = 'raise_exception', HINT = 'tw:account_identity';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_accounts_guard BEFORE UPDATE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_accounts_guard();

CREATE FUNCTION ledger_accounts_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger accounts are never deleted' USING ERRCODE = 'raise_exception',
        HINT = 'tw:append_only';
END $$;

CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_accounts_no_delete();

-- 5. Every entry balances per book and unit, separately for posted amounts and for pending
--    amounts with their releases. Checked at commit (deferred), whatever wrote the rows.
CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT book, unit, (phase = 0) AS posted, sum(amount) AS total INTO bad
    FROM ledger_postings WHERE entry_id = NEW.entry_id
    GROUP BY book, unit, (phase = 0) HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: book %, unit % is off by % atoms',
            NEW.entry_id, bad.book, bad.unit, bad.total
            USING ERRCODE = 'check_violation', HINT = 'tw:unbalanced_entry';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_postings_balanced AFTER INSERT ON ledger_postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();

CREATE FUNCTION ledger_check_entry_has_postings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM ledger_postings WHERE entry_id = NEW.id) < 2 THEN
        RAISE EXCEPTION 'journal entry % needs at least two postings', NEW.id
            USING ERRCODE = 'check_violation', HINT = 'tw:unbalanced_entry';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entries_have_postings AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_has_postings();
