"""What runs on the gateway's side: a client for the tokenwallet HTTP API.

Imports nothing from the server's packages; talks HTTP only (``httpx``). See README.md.
"""

from integrations.grant import Grant
from integrations.tokenwallet_client import (
    ClientClosed,
    ClientStats,
    FlushTimeout,
    QueueFull,
    TokenwalletClient,
)
from integrations.wire import (
    Authorization,
    GrantState,
    Money,
    Price,
    TokenwalletError,
    TokenwalletUnavailable,
    UsageResult,
)

__all__ = [
    "Authorization",
    "ClientClosed",
    "ClientStats",
    "FlushTimeout",
    "Grant",
    "GrantState",
    "Money",
    "Price",
    "QueueFull",
    "TokenwalletClient",
    "TokenwalletError",
    "TokenwalletUnavailable",
    "UsageResult",
]
