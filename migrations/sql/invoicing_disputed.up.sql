-- Invoices whose payment is disputed (migration 0011): 'disputed' is a settlement status of a
-- finalized invoice (a payment on it is under an open dispute), and the amount under dispute
-- ('disputed') a settlement column. Everything else stays as invoicing_immutable.up.sql says.

CREATE OR REPLACE FUNCTION invoicing_invoices_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    settlement CONSTANT text[] := ARRAY['status', 'amount_paid', 'credited',
        'credited_receivable', 'paid_at', 'voided_at', 'void_entry_id', 'disputed'];
BEGIN
    IF OLD.status = 'draft' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'invoice % is %: a finalized invoice cannot be deleted; void it or issue a credit note',
            OLD.number, OLD.status
            USING ERRCODE = 'raise_exception', HINT = 'tw:invoice_immutable';
    END IF;
    IF to_jsonb(NEW) - settlement IS DISTINCT FROM to_jsonb(OLD) - settlement THEN
        RAISE EXCEPTION 'invoice % is %: only its settlement (status, payments, credits) can change; issue a credit note to correct it',
            OLD.number, OLD.status
            USING ERRCODE = 'raise_exception', HINT = 'tw:invoice_immutable';
    END IF;
    IF NEW.status NOT IN ('finalized', 'paid', 'disputed', 'void')
       OR (OLD.status = 'void' AND NEW.status <> 'void') THEN
        RAISE EXCEPTION 'invoice % cannot go from % to %', OLD.number, OLD.status, NEW.status
            USING ERRCODE = 'raise_exception', HINT = 'tw:invoice_immutable';
    END IF;
    RETURN NEW;
END $$;

