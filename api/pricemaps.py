"""LiteLLM price-map imports, shared by the API and the CLI.

Where the bundled map is, and the wire form of an import report.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from plans.litellm_import import ImportReport
from plans.prices import PRICE_FIELDS
from wallet.errors import InvalidRequest

#: The map LiteLLM ships inside its package (what ``LITELLM_LOCAL_MODEL_COST_MAP=True`` uses).
BUNDLED_NAME = "model_prices_and_context_window_backup.json"


def bundled_map_path() -> Path:
    """The price map bundled with the installed ``litellm`` package.

    Found without importing it, which is slow.

    Raises:
        InvalidRequest: litellm is not installed.
    """
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidRequest(
            "the bundled map comes with the litellm package, which is not installed here;"
            " pass the map itself (model_prices_and_context_window.json)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_NAME
    if not path.is_file():
        raise InvalidRequest(f"litellm is installed but has no {BUNDLED_NAME}")
    return path


def load_map(path: Path) -> dict[str, Any]:
    """A price map file, parsed.

    Raises:
        InvalidRequest: not a JSON object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read the price map {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("a LiteLLM price map is a JSON object of models")
    return data


def report_out(report: ImportReport) -> dict[str, Any]:
    """Wire form of an import report (prices as decimal strings)."""
    return {
        "applied": report.applied,
        "card_id": report.card_id,
        "replaces": report.replaces,
        "effective_from": report.effective_from.isoformat(),
        "markup_pct": None if report.markup_pct is None else format(report.markup_pct, "f"),
        "rounding_rule": report.rounding_rule,
        "counts": report.counts(),
        "new_models": list(report.new_models),
        "changes": [
            {
                "model": c.model,
                "change": c.change,
                "input_per_mtok": _price(c.after, "input_per_mtok"),
                "output_per_mtok": _price(c.after, "output_per_mtok"),
                "blockers": list(c.blockers),
            }
            for c in report.changes
            if c.change != "inherited"
        ],
        "refused": [{"model": r.model, "reason": r.reason} for r in report.refused],
        "flagged": [{"model": m.model, "flags": list(m.flags)} for m in report.imported if m.flags],
        "skipped": report.skipped,
    }


def _price(price: Any, name: str) -> str | None:
    if price is None:
        return None
    assert name in PRICE_FIELDS
    return format(getattr(price, name), "f")
