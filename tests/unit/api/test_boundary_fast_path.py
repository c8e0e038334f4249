"""The usage path's fast check of records must refuse exactly what the full walk refuses.

One scan of the body's bytes, then depth only.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.boundary import MAX_JSON_DEPTH, check_json, check_record, json_text_clean
from ledger.errors import DomainError

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=12,
)


def _outcome(fn) -> str | None:
    try:
        fn()
    except DomainError as exc:
        return exc.code
    return None


@settings(max_examples=400, deadline=None)
@given(record=st.dictionaries(text, values, max_size=5), ascii_only=st.booleans())
def test_the_fast_check_refuses_exactly_what_the_full_walk_refuses(record, ascii_only):
    body = json.dumps({"records": [record]}, ensure_ascii=ascii_only).encode()
    fast = _outcome(lambda: check_record(record, 0, text_clean=json_text_clean(body)))
    full = _outcome(lambda: check_json(record, "records[0]", 2))
    assert fast == full


@pytest.mark.parametrize(
    ("body", "clean"),
    [
        (b'{"a": "plain"}', True),
        ('{"a": "caf\u00e9 \u4e2d"}'.encode(), True),
        (b'{"a": "\\u00e9"}', True),
        (b'{"a": "\\u0000"}', False),
        (b'{"a": "\\u001B"}', False),
        (b'{"a": "\\u007f"}', False),
        (b'{"a": "\\u0085"}', False),
        ('{"a": "\x85"}'.encode(), False),
        (b'{"a": "\x7f"}', False),
        (b'{"a": "\\u0009"}', False),  # allowed, but only the full walk says so
        (b'{"a": "\\b"}', False),
        (b'{"a": "\\n"}', True),
    ],
)
def test_the_body_scan(body, clean):
    assert json_text_clean(body) is clean


def test_depth_is_checked_on_a_clean_body():
    deep: dict = {"n": 1}
    for _ in range(MAX_JSON_DEPTH):
        deep = {"n": deep}
    assert _outcome(lambda: check_record(deep, 0, text_clean=True)) == "json_too_deep"
