"""invoicing package."""
