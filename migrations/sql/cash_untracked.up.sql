-- House cash accounts keep no cached balance (migration 0013): every top-up of a book posts to
-- its cash:bank (cash:collected, cash:stripe...), so a cached row would be locked by each of
-- them and serialize bulk crediting. Like revenue and promotions, their balance is the sum of
-- their postings. The guard trigger forbids changing track_balance (an account's identity),
-- so it is set aside for this one statement.

ALTER TABLE ledger_accounts DISABLE TRIGGER ledger_accounts_guard;

UPDATE ledger_accounts
SET track_balance = false, debits_posted = 0, credits_posted = 0,
    debits_pending = 0, credits_pending = 0, version = 0
WHERE owner_id IS NULL AND code LIKE 'cash:%' AND code <> 'cash:stripe_disputed'
  AND track_balance;

ALTER TABLE ledger_accounts ENABLE TRIGGER ledger_accounts_guard;
