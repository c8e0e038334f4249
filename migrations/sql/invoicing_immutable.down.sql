DROP TRIGGER IF EXISTS invoicing_invoice_lines_immutable ON invoicing_invoice_lines;
DROP TRIGGER IF EXISTS invoicing_invoices_immutable ON invoicing_invoices;
DROP FUNCTION IF EXISTS invoicing_invoice_lines_immutable();
DROP FUNCTION IF EXISTS invoicing_invoices_immutable();
