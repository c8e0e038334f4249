-- One deferred check per journal entry instead of one per posting: at commit, each new entry
-- must have at least two postings and balance per book and unit (posted amounts apart from
-- pending amounts and their releases). Postings can only join an entry of their own
-- transaction (ledger_postings_apply), so checking each entry once at commit sees its final
-- postings. A usage batch posts about three postings per entry: a third of the trigger calls.
DROP TRIGGER ledger_postings_balanced ON ledger_postings;
DROP TRIGGER ledger_entries_have_postings ON ledger_entries;

CREATE FUNCTION ledger_check_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    n integer;
BEGIN
    SELECT count(*) INTO n FROM ledger_postings WHERE entry_id = NEW.id;
    IF n < 2 THEN
        RAISE EXCEPTION 'journal entry % needs at least two postings', NEW.id
            USING ERRCODE = 'check_violation', HINT = 'tw:unbalanced_entry';
    END IF;
    SELECT book, unit, (phase = 0) AS posted, sum(amount) AS total INTO bad
    FROM ledger_postings WHERE entry_id = NEW.id
    GROUP BY book, unit, (phase = 0) HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: book %, unit % is off by % atoms',
            NEW.id, bad.book, bad.unit, bad.total
            USING ERRCODE = 'check_violation', HINT = 'tw:unbalanced_entry';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entries_checked AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry();
