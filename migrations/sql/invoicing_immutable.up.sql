-- Finalized invoices are immutable, enforced by PostgreSQL. Applied by migration 0008.
--
-- Once an invoice leaves 'draft' only its settlement bookkeeping may change: status (among
-- finalized, paid and void; void is final), amount_paid, credited, credited_receivable,
-- paid_at, voided_at, void_entry_id. Every other column (number, amounts, dates, bill-to...,
-- and any column added later) is frozen, the invoice cannot be deleted, and its lines cannot be
-- inserted, updated or deleted. Drafts change freely.

CREATE FUNCTION invoicing_invoices_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    settlement CONSTANT text[] := ARRAY['status', 'amount_paid', 'credited',
        'credited_receivable', 'paid_at', 'voided_at', 'void_entry_id'];
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
    IF NEW.status NOT IN ('finalized', 'paid', 'void')
       OR (OLD.status = 'void' AND NEW.status <> 'void') THEN
        RAISE EXCEPTION 'invoice % cannot go from % to %', OLD.number, OLD.status, NEW.status
            USING ERRCODE = 'raise_exception', HINT = 'tw:invoice_immutable';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER invoicing_invoices_immutable BEFORE UPDATE OR DELETE ON invoicing_invoices
    FOR EACH ROW EXECUTE FUNCTION invoicing_invoices_immutable();

CREATE FUNCTION invoicing_invoice_lines_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    frozen text;
BEGIN
    SELECT i.number INTO frozen FROM invoicing_invoices i
    WHERE i.status <> 'draft'
      AND i.id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.invoice_id END,
                   CASE WHEN TG_OP <> 'DELETE' THEN NEW.invoice_id END)
    LIMIT 1;
    IF frozen IS NOT NULL THEN
        RAISE EXCEPTION 'invoice % is finalized: its lines cannot be changed (% refused); issue a credit note',
            frozen, TG_OP
            USING ERRCODE = 'raise_exception', HINT = 'tw:invoice_immutable';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER invoicing_invoice_lines_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON invoicing_invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoicing_invoice_lines_immutable();
