"""Webhook signatures made with the ``standardwebhooks`` package.

They are byte for byte the ones the hand-written HMAC made, so receivers keep verifying them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from ledger.base import utcnow
from wallet.outbox import new_secret, sign, verify


def hand_written_sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The implementation the package replaced (issue 14), kept as the reference."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


payloads = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    key=st.binary(min_size=1, max_size=64),
    msg_id=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1),
    timestamp=st.integers(min_value=0, max_value=2**35),
    payload=payloads,
)
def test_the_package_signs_exactly_as_the_hand_written_hmac(key, msg_id, timestamp, payload):
    secret = "whsec_" + base64.b64encode(key).decode()
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    assert sign(secret, msg_id, timestamp, body) == hand_written_sign(
        secret, msg_id, timestamp, body
    )


def test_a_signed_message_verifies_with_the_package_and_with_verify():
    secret = new_secret()
    body = b'{"data":{},"id":"evt_1","type":"balance.low"}'
    ts = int(utcnow().timestamp())
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": hand_written_sign(secret, "evt_1", ts, body),
    }
    assert Webhook(secret).verify(body, headers)["id"] == "evt_1"
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(secret, {**headers, "webhook-timestamp": str(ts - 301)}, body)
    assert not verify(secret, headers, b"\xff")
