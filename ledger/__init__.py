"""Double-entry ledger core: units, amounts, accounts, entries, holds and their invariants."""
