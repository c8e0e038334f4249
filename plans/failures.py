"""The kinds of failed request a failed-request policy decides (pure: the catalog's policies
and the wallet's usage normalization share them)."""

from __future__ import annotations

#: The failure kinds a policy decides, in documentation order.
FAILURE_KINDS = (
    "provider_error",
    "provider_truncation",
    "refusal",
    "client_disconnect",
    "empty_completion",
)
