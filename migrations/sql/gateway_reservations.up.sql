-- Gateway authorizations become wallet reservations (migration 0009).
--
-- 1. Lock keys computed in one place, by the database: the usage gate of a billing tree (the
--    month-end close takes it exclusively, usage batches shared) and the catalog lock of a
--    currency (catalog changes exclusively, pricing shared). 64-bit signed, from SHA-256.
CREATE FUNCTION tw_lock_key(scope text, id text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || substr(encode(sha256(convert_to('tokenwallet:' || scope || ':' || id, 'UTF8')),
                                 'hex'), 1, 16))::bit(64)::bigint
$$;

-- 2. What open authorizations reserve from each lot is kept on the lot; remaining + reserved is
--    what the ledger holds for it.
UPDATE wallet_credit_lots l SET reserved = r.atoms
FROM (
    SELECT (e ->> 0)::bigint AS lot_id, sum((e ->> 1)::numeric) AS atoms
    FROM wallet_authorizations a, jsonb_array_elements(a.reserved) e
    WHERE a.status = 'approved'
    GROUP BY 1
) r
WHERE l.id = r.lot_id;

-- 3. Open authorizations made before this migration also hold a pending ledger entry; release
--    it (a hold_void entry with release postings), as their reservation now lives on the lots.
INSERT INTO ledger_entries (kind, description, hold_id, effective_at, metadata)
SELECT 'hold_void', 'authorization ' || a.id || ' moved to wallet reservations', a.hold_entry_id,
       now(), jsonb_build_object('authorization_id', a.id, 'migration', '0009')
FROM wallet_authorizations a
WHERE a.status = 'approved' AND a.hold_entry_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.hold_id = a.hold_entry_id);

INSERT INTO ledger_postings (entry_id, account_id, unit, book, amount, phase)
SELECT e.id, p.account_id, p.unit, p.book, -p.amount, 2
FROM ledger_entries e JOIN ledger_postings p ON p.entry_id = e.hold_id AND p.phase = 1
WHERE e.kind = 'hold_void' AND e.metadata ->> 'migration' = '0009' AND e.created_at = now();

-- 4. Closed authorizations reserve nothing (the first version kept what they had reserved as
--    history; held_money and held_tokens still say what they held).
UPDATE wallet_authorizations
SET reserved = '[]'::jsonb, reserved_quota = '[]'::jsonb, overage = 0, reseller_overage = 0
WHERE status <> 'approved'
  AND (reserved <> '[]'::jsonb OR reserved_quota <> '[]'::jsonb OR overage <> 0
       OR reseller_overage <> 0);

-- 5. A text array from a JSON array: the gateway path sends each statement one JSON parameter
--    instead of several arrays (cheaper to encode and send).
CREATE FUNCTION tw_texts(doc jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(e), '{}') FROM jsonb_array_elements_text(doc) e
$$;
