"""The kinds of failed request a failed-request policy decides.

Pure: the catalog's policies and the wallet's gateway snapshot share them.
"""

from __future__ import annotations

#: The failure kinds a policy decides, in documentation order.
FAILURE_KINDS = (
    "provider_error",
    "provider_truncation",
    "refusal",
    "client_disconnect",
    "empty_completion",
)
