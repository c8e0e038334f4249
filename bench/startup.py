"""How long ``tokenwallet serve`` takes to answer /health.

On a fresh data directory (initdb + migrations) and on a restart that reuses it. Writes
bench/results/startup.json.

Run: ``.venv/bin/python -m bench.startup``
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.harness import serve, write_result


def main() -> None:
    """Time three fresh starts and three restarts, then write the result."""
    fresh, restart = [], []
    for _ in range(3):
        base = Path(tempfile.mkdtemp(prefix="tw-bench-startup-"))
        try:
            with serve(base) as s:
                fresh.append(s.seconds_to_health)
            with serve(base) as s:
                restart.append(s.seconds_to_health)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    write_result(
        "startup",
        {
            "fresh_data_dir_seconds_to_health": [f"{x:.2f}" for x in fresh],
            "restart_seconds_to_health": [f"{x:.2f}" for x in restart],
        },
    )


if __name__ == "__main__":
    main()
