"""The walk-forward table across every trained model and every baseline (DVC `evaluate`).

Each served family (the classical `garch` family, the networks, the ensemble) is compared with
the random walk and with the strongest classical baseline, picked on validation blocks. The
one-sided Diebold-Mariano p-values against that baseline are Holm-corrected across every
model × horizon in the table: with five models at three horizons, fifteen chances to look
lucky. The classical family's row is named `garch (family)`: the `garch` row is the GARCH-t
baseline every card carries, which the family serves only when validation prefers it to GJR.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from contracts import FAMILIES
from features.stats import holm
from training.baselines import BASELINES
from training.card import tail
from training.classical import CLASSICAL


def row_name(family: str) -> str:
    """A family's row in the table (distinct from a baseline of the same name)."""
    return f"{family} (family)" if family in BASELINES else family


MODELS = tuple(row_name(f) for f in FAMILIES)
ORDER = (*MODELS, *CLASSICAL, "random_walk", "historical_drift")


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.2%}"


def _p(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _tail(m: dict, side: str) -> str:
    nan = float("nan")
    return tail(
        m.get(f"coverage_{side}", nan),
        m.get(f"kupiec_p_{side}", nan),
        m.get(f"christoffersen_p_{side}", nan),
    )


def write_walkforward_report(models_dir: Path, out: Path) -> Path:
    """Markdown + JSON: per model and horizon, the metrics on all walk-forward test folds."""
    rows: dict[str, list[dict]] = {}
    splits: dict[str, dict[str, list[dict]]] = {}
    profile, hashes = "?", set()
    for card_file in sorted(models_dir.glob("*/card.json")):
        card = json.loads(card_file.read_text())
        profile = card["profile"]
        hashes.add(card.get("config_hash", "?"))
        for name, by_split in card["metrics"].items():
            if name == card["family"]:
                rows[row_name(name)], splits[row_name(name)] = by_split["all"], by_split
            elif name not in rows or name not in FAMILIES:  # a baseline: every card agrees
                rows.setdefault(name, by_split["all"])
                splits.setdefault(name, by_split)
    if not rows:
        raise FileNotFoundError(f"no model cards under {models_dir}; train first")
    tested = [(n, m) for n in MODELS if n in rows for m in rows[n] if m.get("reference")]
    adjusted = holm([m["dm_pvalue_vs_reference"] for _, m in tested])
    for (_, m), p_value in zip(tested, adjusted, strict=True):
        m["dm_pvalue_vs_reference_holm"] = p_value
    reference = next((m["reference"] for _, m in tested), None)
    lines = [
        f"# Walk-forward evaluation ({profile} profile)",
        "",
        f"Configuration hashes: {', '.join(f'`{h}`' for h in sorted(hashes))} (one per family; "
        "each frozen before its run).",
        "",
        f"Strongest classical baseline (picked on validation blocks): **{reference or '—'}**. "
        "p-values are one-sided Diebold-Mariano (the model loses less), Newey-West with "
        "max(20, h − 1) lags; against the classical baseline they are Holm-corrected over "
        f"the {len(tested)} model × horizon tests below.",
        "",
        "| model | h | pinball | skill vs RW | p | skill vs classical | p (Holm) | dir. acc (p) "
        "| rank IC | cover 80 | below q10 (Kupiec, Chr.) | above q90 (Kupiec, Chr.) | Sharpe |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [n for n in ORDER if n in rows] + sorted(set(rows) - set(ORDER)):
        for m in rows[name]:
            lines.append(
                f"| {name} | {m['horizon']} | {m['pinball']:.5f} | {_pct(m['skill_vs_rw'])} | "
                f"{_p(m['dm_pvalue_vs_rw'])} | {_pct(m.get('skill_vs_reference'))} | "
                f"{_p(m.get('dm_pvalue_vs_reference_holm'))} | "
                f"{m['directional_accuracy']:.3f} ({_p(m['directional_pvalue'])}) | "
                f"{m['rank_ic']:+.3f} | {m['coverage_80']:.3f} | "
                f"{_tail(m, 'below')} | {_tail(m, 'above')} | "
                f"{m['backtest']['sharpe']:+.2f} |"
            )
    lines += ["", *_robustness(splits)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "walkforward.json").write_text(json.dumps(rows, indent=2))
    path = out / "walkforward.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _robustness(splits: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Per served model: in how many test folds it beats the classical baseline, and its skill
    with 2020 (the year that gives volatility models most of their edge) left out."""
    lines = [
        "## Robustness against the classical baseline",
        "",
        "| model | h | folds with skill > 0 | skill, 2020 excluded |",
        "|---|---|---|---|",
    ]
    for name in (n for n in MODELS if n in splits):
        if not any(m.get("reference") for m in splits[name]["all"]):
            continue  # the classical family serving the strongest baseline itself
        folds = [s for s in splits[name] if s.startswith("fold")]
        for i, m in enumerate(splits[name]["all"]):
            ahead = sum(
                1
                for f in folds
                if math.isfinite(splits[name][f][i].get("skill_vs_reference", math.nan))
                and splits[name][f][i]["skill_vs_reference"] > 0
            )
            calm = splits[name].get("ex2020", [None] * (i + 1))[i]
            lines.append(
                f"| {name} | {m['horizon']} | {ahead} of {len(folds)} | "
                f"{_pct(calm.get('skill_vs_reference') if calm else None)} |"
            )
    return lines
