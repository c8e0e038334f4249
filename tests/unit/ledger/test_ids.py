"""Public identifiers: prefixed, time-ordered, unguessable."""

from __future__ import annotations

from ledger.ids import new_id


def test_ids_carry_their_prefix_and_sort_by_creation_time():
    ids = [new_id("acc") for _ in range(50)]
    assert all(i.startswith("acc_") and len(i) == len("acc_") + 16 + 8 for i in ids)
    assert [i[:20] for i in ids] == sorted(i[:20] for i in ids)
    assert len(set(ids)) == len(ids)
