"""Pytest plugin: the suite's time and test count per tier, printed at the end of the run.

The tiers are the directories under ``tests/`` (``unit``, ``integration``, ``e2e``); a tier's
time is the sum of its tests' setup, call and teardown. ``make test`` loads the plugin with
``-p tests.tier_times``.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

_seconds: defaultdict[str, float] = defaultdict(float)
_tests: defaultdict[str, int] = defaultdict(int)


def tier_of(nodeid: str) -> str:
    """The tier of a test id (``tests/unit/ledger/test_ids.py::test_x`` -> ``unit``)."""
    parts = nodeid.split("::", 1)[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each phase's duration to its tier; count a test once (at its setup)."""
    tier = tier_of(report.nodeid)
    _seconds[tier] += report.duration
    if report.when == "setup":
        _tests[tier] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print one line per tier: tests run and seconds spent."""
    if not _tests:
        return
    terminalreporter.section("time per tier")
    for tier in sorted(_tests, key=lambda t: (-_seconds[t], t)):
        terminalreporter.write_line(f"{tier:<12} {_tests[tier]:>5} tests {_seconds[tier]:>8.1f} s")
