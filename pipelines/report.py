"""The walk-forward table across every trained model and both baselines (DVC `evaluate`)."""

from __future__ import annotations

import json
from pathlib import Path

ORDER = ("lstm", "transformer", "hybrid", "ensemble", "random_walk", "historical_drift")


def write_walkforward_report(models_dir: Path, out: Path) -> Path:
    """Markdown + JSON: per model and horizon, the metrics on all walk-forward test folds."""
    rows: dict[str, list[dict]] = {}
    profile = "?"
    for card_file in sorted(models_dir.glob("*/card.json")):
        card = json.loads(card_file.read_text())
        profile = card["profile"]
        for name, by_split in card["metrics"].items():
            if name == card["family"] or name not in rows:
                rows[name] = by_split["all"]
    if not rows:
        raise FileNotFoundError(f"no model cards under {models_dir}; train first")
    lines = [
        f"# Walk-forward evaluation ({profile} profile)",
        "",
        "| model | h | pinball | skill vs RW | DM p | dir. acc | rank IC | cover 80 | Sharpe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [n for n in ORDER if n in rows] + sorted(set(rows) - set(ORDER)):
        for m in rows[name]:
            lines.append(
                f"| {name} | {m['horizon']} | {m['pinball']:.5f} | {m['skill_vs_rw']:+.2%} | "
                f"{m['dm_pvalue_vs_rw']:.3f} | {m['directional_accuracy']:.3f} | "
                f"{m['rank_ic']:+.3f} | {m['coverage_80']:.3f} | {m['backtest']['sharpe']:+.2f} |"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "walkforward.json").write_text(json.dumps(rows, indent=2))
    path = out / "walkforward.md"
    path.write_text("\n".join(lines) + "\n")
    return path
