"""Training stages: featurize → train (per family: classical, networks) → ensemble → evaluate →
register.

Each stage reads and writes files under `data/` and `models/` so DVC can cache and reproduce it;
training runs are tracked in MLflow (one experiment per family).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd

from contracts import FAMILY_KINDS, MEMBERS
from features.windows import FeatureConfig
from training import conformal, registry
from training import walkforward as wf
from training.baselines import BASELINES, ClassicalFits, baseline, to_frame
from training.bundle import Bundle, EnsembleBundle, ForecastBundle
from training.card import ModelCard
from training.classical import SERVED
from training.config import TrainConfig, load_config
from training.data import (
    FEATURES_FILE,
    build_panel,
    final_fold,
    fit_scaler,
    load_panel,
    panel_to_frame,
    vocab_for,
    window_set,
)
from training.ensemble import align, combine, fit_weights

MODELS_DIR = Path("models")
Report = Callable[[str], None]


def featurize(bars: pd.DataFrame, out: Path = FEATURES_FILE) -> Path:
    """Features, targets and volatility for every ticker (the `featurize` stage)."""
    panel = build_panel(bars, FeatureConfig())
    out.parent.mkdir(parents=True, exist_ok=True)
    panel_to_frame(panel).to_parquet(out, index=False)
    return out


def _fold_rows(folds: list) -> list[dict[str, str]]:
    return [
        {k: str(v.date()) if hasattr(v, "date") else str(v) for k, v in asdict(f).items()}
        for f in folds
    ]


def _log_run(
    family: str,
    profile: str,
    cfg: TrainConfig,
    card: ModelCard,
    bundle: Bundle,
    out: Path,
) -> dict[str, str]:
    registry.experiment(family)
    with mlflow.start_run(run_name=f"{family}-{profile}") as run:
        mlflow.log_params({k: str(v) for k, v in cfg.to_dict().items() if k != "extra"})
        mlflow.log_param("profile", profile)
        mlflow.log_metrics(card.headline())
        for split, rows in card.metrics[family].items():
            for m in rows:
                mlflow.log_metrics(
                    {
                        f"{split}.h{m.horizon}.pinball": m.pinball,
                        f"{split}.h{m.horizon}.skill_vs_rw": m.skill_vs_rw,
                        f"{split}.h{m.horizon}.coverage_80": m.coverage_80,
                    }
                )
        for path in card.write(out):
            mlflow.log_artifact(str(path))
        if isinstance(bundle, ForecastBundle):
            mlflow.log_dict(bundle.feature_config.to_dict(), "feature_config.json")
            mlflow.log_dict(bundle.scaler.to_dict(), "scaler.json")
        mlflow.log_artifact(str(out / "predictions.parquet"))
        model_uri = registry.log_bundle(bundle, out / "bundle")
        info = {
            "family": family,
            "profile": profile,
            "run_id": run.info.run_id,
            "model_uri": model_uri,
        }
    (out / "run.json").write_text(json.dumps(info, indent=2))
    return info


def train(
    family: str, profile: str, report: Report, progress: bool = False, models_dir: Path = MODELS_DIR
) -> ModelCard:
    """The family's training stage, by its kind (see contracts.FAMILY_KINDS)."""
    kind = FAMILY_KINDS[family]
    if kind == "ensemble":
        return train_ensemble(profile, report, models_dir)
    if kind == "classical":
        return train_classical(profile, report, models_dir)
    return train_member(family, profile, report, progress, models_dir)


def train_member(
    family: str, profile: str, report: Report, progress: bool = False, models_dir: Path = MODELS_DIR
) -> ModelCard:
    """Walk-forward evaluate, then fit the production model on all labelled history and log it."""
    cfg = load_config(family, profile)
    panel = load_panel(cfg)
    vocab = vocab_for(panel)
    started = time.perf_counter()
    result = wf.run(family, cfg, panel, vocab, report, progress)
    walk_seconds = time.perf_counter() - started
    report(f"{family}: final fit on all labelled history")
    started = time.perf_counter()
    final = wf.fit_final(family, cfg, panel, vocab, progress)
    final_seconds = time.perf_counter() - started
    strongest = wf.strongest_classical(result)
    card = _card(
        family,
        profile,
        cfg,
        result,
        strongest,
        result.predictions("test"),
        {"walk_forward": walk_seconds, "final_fit": final_seconds},
    )
    splits = (result.predictions("test"), result.predictions("val"), final.val)
    out = _write_outputs(family, result, strongest, splits, models_dir)
    bundle = ForecastBundle.from_module(
        final.module,
        panel.config,
        final.scaler,
        vocab,
        {"skill": card.skill(), "profile": profile},
        calibration=final.offsets,
        scale=final.scale,
    )
    _log_run(family, profile, cfg, card, bundle, out)
    return card


def train_classical(
    profile: str,
    report: Report,
    models_dir: Path = MODELS_DIR,
    pick: Literal["stronger", "weaker"] = "stronger",
) -> ModelCard:
    """The classical family (`garch`): walk-forward the baselines, serve whichever GARCH-type
    model (GARCH-t or GJR-t) was stronger on validation (`pick="weaker"`: the other one, the
    natural challenger to it), fitted per ticker on the same rows up to the production fit end
    the networks use. Seconds to minutes, not hours."""
    family = "garch"
    cfg = load_config(family, profile)
    panel = load_panel(cfg)
    vocab = vocab_for(panel)
    started = time.perf_counter()
    result = wf.run(None, cfg, panel, vocab, report)
    walk_seconds = time.perf_counter() - started
    stronger = wf.strongest_classical(result, SERVED)
    chosen = stronger if pick == "stronger" else next(m for m in SERVED if m != stronger)
    report(f"{family}: serving {chosen} ({pick} on validation); fitting every ticker")
    started = time.perf_counter()
    fold = final_fold(panel.dates, cfg.val_days, cfg.embargo)
    fits = ClassicalFits(panel)
    val = window_set(
        panel, fit_scaler(panel, fold.fit_end), vocab, fold.val_start, fold.val_end
    ).labelled()
    final_val = to_frame(val, baseline(chosen, val, panel, fold.fit_end, fits), cfg.horizons)
    bundle = wf.classical_bundle(fits, chosen, fold.fit_end)
    final_seconds = time.perf_counter() - started
    test = result.baseline_predictions(chosen)
    strongest = wf.strongest_classical(result)
    card = _card(
        family,
        profile,
        cfg,
        result,
        strongest,
        test,
        {"walk_forward": walk_seconds, "final_fit": final_seconds},
        serves=chosen,
        notes=[
            f"serves {chosen}: {_CLASSICAL_NAMES[chosen]} with Student-t innovations, fitted "
            f"per ticker ({len(bundle.params)} of {len(panel.series)} tickers; the others get "
            "the median dynamics at their own variance level)",
            *(
                []
                if pick == "stronger"
                else [
                    f"the weaker of the two on validation ({stronger} was stronger): a challenger"
                ]
            ),
        ],
    )
    splits = (test, result.baseline_predictions(chosen, "val"), final_val)
    out = _write_outputs(family, result, strongest, splits, models_dir)
    bundle.card = {"skill": card.skill(), "profile": profile}
    _log_run(family, profile, cfg, card, bundle, out)
    return card


_CLASSICAL_NAMES = {"garch": "GARCH(1,1)", "gjr": "GJR-GARCH(1,1)"}


def _card(
    family: str,
    profile: str,
    cfg: TrainConfig,
    result: wf.WalkForward,
    strongest: str,
    test: pd.DataFrame,
    seconds: dict[str, float],
    notes: list[str] | None = None,
    serves: str | None = None,
) -> ModelCard:
    """Metrics of `test` against the random walk and `strongest`, the strongest classical
    baseline (picked on validation), with every baseline's own, on the same folds. A classical
    family that `serves` the strongest baseline itself is not compared with itself."""
    rw = result.baseline_predictions("random_walk")
    reference = None
    if strongest != serves:
        reference = (strongest, result.baseline_predictions(strongest))
    metrics = {name: wf.score(result.baseline_predictions(name), rw, cfg) for name in BASELINES}
    # after the baselines: the classical family's own entry replaces its namesake baseline's
    metrics[family] = wf.score(test, rw, cfg, reference)
    return ModelCard(
        family,
        profile,
        cfg.to_dict(),
        _fold_rows([r.fold for r in result.folds]),
        metrics,
        seconds,
        notes=[
            _reference_note(strongest),
            *(notes or []),
            *_profile_notes(family, profile),
            *_standing(family, metrics[family]["all"]),
        ],
    )


def _standing(family: str, rows: list) -> list[str]:
    """Whether this model has earned the default place the classical family holds."""
    if FAMILY_KINDS[family] == "classical":
        return [
            "the default model (requests that name none get it) until a network or the "
            "ensemble beats the strongest classical baseline on this yardstick"
        ]
    beaten = [
        m.horizon for m in rows if m.skill_vs_reference > 0 and m.dm_pvalue_vs_reference < 0.05
    ]
    if len(beaten) == len(rows):
        return [
            f"beats {rows[0].reference} at every horizon (one-sided DM p < 0.05, before the "
            "report's Holm correction): a candidate to replace garch as the default model"
        ]
    return [
        f"does not beat the strongest classical baseline ({rows[0].reference}) at every horizon"
        f"{f' (only at h={beaten})' if beaten else ''}: a challenger, and garch stays the "
        "default model"
    ]


def _profile_notes(family: str, profile: str) -> list[str]:
    if profile != "quick" or FAMILY_KINDS[family] == "classical":
        return []
    return [
        "quick profile (a few tickers, a couple of epochs): a smoke-test model and a challenger "
        "to the classical champion, not a forecaster to rely on"
    ]


def _write_outputs(
    family: str,
    result: wf.WalkForward,
    strongest: str,
    splits: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    models_dir: Path,
) -> Path:
    """Predictions (test, val, final_val), the baselines' and the reference's name, for the
    ensemble and the evaluate stage."""
    out = models_dir / family
    out.mkdir(parents=True, exist_ok=True)
    test, val, final_val = splits
    pd.concat(
        [
            test.assign(split="test"),
            val.assign(split="val"),
            final_val.assign(split="final_val", fold=-1),
        ],
        ignore_index=True,
    ).to_parquet(out / "predictions.parquet", index=False)
    for name in BASELINES:
        result.baseline_predictions(name).to_parquet(out / f"baseline_{name}.parquet", index=False)
    (out / "reference.json").write_text(json.dumps({"strongest_classical": strongest}))
    return out


def _reference_note(name: str) -> str:
    return (
        f"strongest classical baseline, picked on validation blocks: {name} "
        "(skill and DM p against it in the table)"
    )


def _member_predictions(split: str, models_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for family in MEMBERS:
        frame = pd.read_parquet(models_dir / family / "predictions.parquet")
        out[family] = frame[frame["split"] == split]
    return out


def train_ensemble(profile: str, report: Report, models_dir: Path = MODELS_DIR) -> ModelCard:
    """Weights fitted on each fold's validation predictions, and the combined bands calibrated
    on them, then scored on that fold's test block."""
    cfg = load_config("ensemble", profile)
    val, test = _member_predictions("val", models_dir), _member_predictions("test", models_dir)
    combined = []
    for fold in sorted(test[MEMBERS[0]]["fold"].unique()):
        report(f"ensemble: fold {fold + 1}: fitting weights on validation predictions")
        fold_val = align({f: v[v["fold"] == fold] for f, v in val.items()})
        weights = fit_weights(fold_val, list(MEMBERS))
        offsets = wf.calibration(cfg, combine(fold_val, weights))
        part = combine(align({f: t[t["fold"] == fold] for f, t in test.items()}), weights)
        combined.append(conformal.apply(part, offsets).assign(fold=fold))
    predictions = pd.concat(combined, ignore_index=True)
    first = models_dir / MEMBERS[0]
    rw = pd.read_parquet(first / "baseline_random_walk.parquet")
    strongest = json.loads((first / "reference.json").read_text())["strongest_classical"]
    reference = (strongest, pd.read_parquet(first / f"baseline_{strongest}.parquet"))
    metrics = {"ensemble": wf.score(predictions, rw, cfg, reference)}
    for family in MEMBERS:
        metrics[family] = wf.score(test[family], rw, cfg, reference)
    for name in BASELINES:
        metrics[name] = wf.score(pd.read_parquet(first / f"baseline_{name}.parquet"), rw, cfg)
    final_val = align(_member_predictions("final_val", models_dir))
    final = fit_weights(final_val, list(MEMBERS))
    final_offsets = wf.calibration(cfg, combine(final_val, final))
    runs = {f: json.loads((models_dir / f / "run.json").read_text()) for f in MEMBERS}
    folds = json.loads((models_dir / MEMBERS[0] / "card.json").read_text())["folds"]
    card = ModelCard(
        "ensemble",
        profile,
        cfg.to_dict(),
        folds,
        metrics,
        notes=[
            _reference_note(strongest),
            f"final weights: {final}",
            "members: " + ", ".join(f"{f} run {r['run_id']}" for f, r in runs.items()),
            *_profile_notes("ensemble", profile),
            *_standing("ensemble", metrics["ensemble"]["all"]),
        ],
    )
    out = models_dir / "ensemble"
    out.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out / "predictions.parquet", index=False)
    members = {f: {"run_id": r["run_id"], "model_uri": r["model_uri"]} for f, r in runs.items()}
    bundle = EnsembleBundle(
        final, members, {"skill": card.skill(), "profile": profile}, calibration=final_offsets
    )
    _log_run("ensemble", profile, cfg, card, bundle, out)
    return card


def baseline_table(profile: str, report: Report) -> list[str]:
    """Markdown rows: each baseline's skill over the random walk per horizon (one-sided DM p),
    overall, in each test fold, and with 2020 left out; the strongest on validation named."""
    cfg = load_config("lstm", profile)  # the folds and rows every family shares
    panel = load_panel(cfg)
    started = time.perf_counter()
    result = wf.run(None, cfg, panel, vocab_for(panel), report)
    rw = result.baseline_predictions("random_walk")
    lines = [
        f"strongest on validation: {wf.strongest_classical(result)} "
        f"({time.perf_counter() - started:.0f} s; config {cfg.fingerprint()})",
        "| baseline | split | h=1 | h=5 | h=20 |",
        "|---|---|---|---|---|",
    ]
    for name in BASELINES:
        if name == "random_walk":
            continue
        for split, rows in wf.score(result.baseline_predictions(name), rw, cfg).items():
            cells = [f"{m.skill_vs_rw:+.2%} (p {m.dm_pvalue_vs_rw:.3f})" for m in rows]
            lines.append(f"| {name} | {split} | " + " | ".join(cells) + " |")
    return lines
