"""Advisory-lock keys: stable signed 64-bit values from SHA-256 of the scoped name."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from ledger.locks import lock_key


def test_a_key_is_the_signed_first_eight_bytes_of_the_scoped_sha256():
    digest = hashlib.sha256(b"tokenwallet:usage-gate:acc_1").digest()
    assert lock_key("usage-gate", "acc_1") == int.from_bytes(digest[:8], "big", signed=True)
    assert lock_key("billing_close") == int.from_bytes(
        hashlib.sha256(b"tokenwallet:billing_close").digest()[:8], "big", signed=True
    )


@given(st.text(), st.text())
def test_keys_are_signed_64_bit_and_scoped(scope: str, name: str):
    key = lock_key(scope, name)
    assert -(2**63) <= key < 2**63
    assert key == lock_key(scope, name)
    assert key == lock_key(f"{scope}:{name}")
