"""Hyper-parameter search with Ray Tune: ASHA over a small space, every trial tracked in MLflow.

Honesty rule: the objective is the validation pinball loss of the FIRST walk-forward fold. Its
validation block ends before every test block, so no fold's test data ever chooses a
hyper-parameter. (The last fold's validation block would not do: with `embargo + val_days <=
test_days` it lies inside the previous fold's test block, which walk-forward then reports.)

Each trial trains epoch by epoch and reports `val_loss` after every epoch, so ASHA can stop bad
trials early. The driver loads the panel once and hands it to the trials through the Ray object
store; trials run in Ray worker processes, so they log to MLflow with the absolute tracking URI
they are given, never with the driver's global state. The best configuration is written to
`params.yaml` under `tuned.<profile>.<family>`, where `load_config` picks it up.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import ray
import yaml
from mlflow import MlflowClient
from mlflow.entities import Param
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler

from contracts import NETWORKS, absolute_tracking_uri
from training import registry
from training.config import PARAMS_FILE, TrainConfig, load_config
from training.data import (
    Fold,
    Panel,
    Vocab,
    WindowSet,
    fit_scaler,
    load_panel,
    vocab_for,
    window_set,
)
from training.fit import fit
from training.local_ray import init_local_ray
from training.walkforward import folds_for

Report = Callable[[str], None]
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
SEARCHED = ("hidden", "layers", "dropout", "lr", "window")
# Per profile: the discrete choices. `quick` is scaled down so a test search takes seconds.
HIDDEN = {"quick": (8, 16), "full": (16, 32, 64)}
WINDOW = {"quick": (10, 20), "full": (20, 30, 60)}
OBJECTIVE = "val_loss"  # mean pinball loss on the tuning fold's validation block
BEST = "best_val_loss"  # running minimum in a trial: what fit() keeps (it restores the best epoch)


@dataclass(frozen=True)
class TuneResult:
    """What a search found: the winning hyper-parameters and how it was tracked."""

    best_config: dict[str, Any]
    best_val_loss: float
    trials: int
    parent_run_id: str
    seconds: float


@dataclass(frozen=True)
class _Tracking:
    """Where a trial logs. Passed explicitly: Ray workers share none of the driver's state."""

    uri: str
    experiment_id: str
    parent_run_id: str


def search_space(profile: str, cfg: TrainConfig) -> dict[str, Any]:
    """The sampled hyper-parameters; hidden sizes that attention heads cannot split are left out."""
    sizes = "quick" if profile == "quick" else "full"
    hidden = [h for h in HIDDEN[sizes] if h % cfg.heads == 0]
    if not hidden:
        raise ValueError(f"no hidden size in {HIDDEN[sizes]} is divisible by heads={cfg.heads}")
    return {
        "hidden": tune.choice(hidden),
        "layers": tune.choice([1, 2]),
        "dropout": tune.uniform(0.0, 0.3),
        "lr": tune.loguniform(3e-4, 3e-3),
        "window": tune.choice(list(WINDOW[sizes])),
    }


def tuning_fold(panel: Panel, cfg: TrainConfig) -> Fold:
    """The first walk-forward fold: its validation block precedes every test block."""
    return folds_for(panel, cfg)[0]


def tuning_data(cfg: TrainConfig, panel: Panel, vocab: Vocab) -> tuple[WindowSet, WindowSet]:
    """Training and validation windows of the tuning fold, at the trial's window length."""
    panel = Panel(replace(panel.config, window=cfg.window), panel.horizons, panel.series)
    fold = tuning_fold(panel, cfg)
    scaler = fit_scaler(panel, fold.fit_end)
    train = window_set(panel, scaler, vocab, end=fold.fit_end, stride=cfg.train_stride)
    val = window_set(panel, scaler, vocab, start=fold.val_start, end=fold.val_end)
    return train, val


class _EpochReport(L.Callback):
    """After each validation pass: log `val_loss` to the trial's MLflow run, then report it to
    Tune. The MLflow write comes first because ASHA may end the trial inside `tune.report`."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.best = math.inf
        self.complete = False  # True once the epoch being reported is the trial's last anyway

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics[OBJECTIVE])
        epoch = trainer.current_epoch + 1
        self.best = min(self.best, loss)
        self.complete = epoch >= (trainer.max_epochs or 0) or trainer.should_stop
        self.client.log_metric(self.run_id, OBJECTIVE, loss, step=epoch)
        tune.report({OBJECTIVE: loss, BEST: self.best, "epoch": epoch})


def _trial(
    config: dict[str, Any],
    *,
    family: str,
    base: TrainConfig,
    panel: Panel,
    vocab: Vocab,
    tracking: _Tracking,
) -> None:
    """One Ray Tune trial, in a worker process: a child MLflow run, trained epoch by epoch."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = base.with_overrides(**config)
    train, val = tuning_data(cfg, panel, vocab)
    mlflow.set_tracking_uri(tracking.uri)
    client = MlflowClient(tracking.uri)
    trial_id = tune.get_context().get_trial_id()
    run_id = client.create_run(
        tracking.experiment_id,
        run_name=f"{family}-{trial_id}",
        tags={"mlflow.parentRunId": tracking.parent_run_id, "ray.trial_id": trial_id},
    ).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in config.items()])
    epochs = _EpochReport(client, run_id)
    status = "FAILED"
    try:
        fit(family, cfg, train, val, vocab, callbacks=(epochs,))
        status = "FINISHED"
    except SystemExit:  # how Tune ends a trial at a report: stopped by ASHA, or at max_t
        status = "FINISHED" if epochs.complete else "KILLED"
        raise
    finally:
        client.set_terminated(run_id, status)


def _silent(_: str) -> None:
    """Stands in for the driver's report function wherever Tune unpickles its state."""


class _Progress(tune.Callback):
    """Driver-side progress lines: one per trial epoch, and one when a trial ends."""

    def __init__(self, report: Report = _silent, total: int = 0) -> None:
        self.report = report
        self.total = total
        self.ended = 0

    def __reduce__(self) -> tuple[type, tuple[()]]:
        # Tune pickles its run config (and so this callback); a console's print may not pickle.
        return (_Progress, ())

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        self.report(
            f"  {trial.trial_id} epoch {result['epoch']}: {OBJECTIVE} {result[OBJECTIVE]:.5f}"
        )

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.ended += 1
        self.report(f"trial {self.ended}/{self.total} ({trial.trial_id}) ended: {trial.config}")

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.ended += 1
        self.report(
            f"trial {self.ended}/{self.total} ({trial.trial_id}) failed: {trial.error_file}"
        )


def _start_ray(cpus: int) -> bool:
    """Start a small local Ray unless one is running; True when this call started it."""
    if ray.is_initialized():
        return False
    init_local_ray(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
        logging_level=logging.WARNING,
    )
    return True


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so the config dumps as plain YAML."""
    return value.item() if hasattr(value, "item") else value


def _best(grid: tune.ResultGrid, report: Report) -> tuple[dict[str, Any], float]:
    """The trial with the lowest validation loss at any epoch, and that loss."""
    if grid.num_errors:
        report(f"{grid.num_errors} of {len(grid)} trials failed; first: {grid.errors[0]!r}")
    if grid.num_errors == len(grid):
        raise RuntimeError("every tuning trial failed") from grid.errors[0]
    best = grid.get_best_result(metric=BEST, mode="min", scope="last")
    return {k: _plain(best.config[k]) for k in SEARCHED}, float(best.metrics[BEST])


def _search(
    family: str,
    profile: str,
    cfg: TrainConfig,
    trials: int,
    max_concurrent: int,
    data: tuple[Panel, Vocab],
    tracking: _Tracking,
    report: Report,
) -> tuple[dict[str, Any], float]:
    """Run the Tune experiment (results kept in a temp dir: MLflow holds what matters)."""
    panel, vocab = data
    trainable = tune.with_parameters(
        _trial, family=family, base=cfg, panel=panel, vocab=vocab, tracking=tracking
    )
    started_ray = _start_ray(max_concurrent)
    try:
        with tempfile.TemporaryDirectory(prefix="ray-tune-") as storage:
            tuner = tune.Tuner(
                tune.with_resources(trainable, {"cpu": 1}),
                param_space=search_space(profile, cfg),
                tune_config=tune.TuneConfig(
                    scheduler=ASHAScheduler(
                        metric=OBJECTIVE, mode="min", max_t=cfg.max_epochs, grace_period=1
                    ),
                    num_samples=trials,
                    max_concurrent_trials=max_concurrent,
                    reuse_actors=True,  # one worker start-up (torch, Lightning) for many trials
                ),
                run_config=tune.RunConfig(
                    name=f"tune-{family}-{profile}",
                    storage_path=str(Path(storage).resolve()),
                    verbose=0,
                    callbacks=[_Progress(report, trials)],
                ),
            )
            return _best(tuner.fit(), report)
    finally:
        if started_ray:
            ray.shutdown()


def _close_orphans(client: MlflowClient, tracking: _Tracking) -> None:
    """Trials killed outright (not via `tune.report`) leave RUNNING child runs: mark them."""
    orphans = client.search_runs(
        [tracking.experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{tracking.parent_run_id}' "
            "and attributes.status = 'RUNNING'"
        ),
    )
    for run in orphans:
        client.set_terminated(run.info.run_id, "KILLED")


def write_tuned(
    profile: str, family: str, config: dict[str, Any], path: Path = PARAMS_FILE
) -> None:
    """Set `tuned.<profile>.<family>` in params.yaml, leaving every other key as it was.

    Only the top-level `tuned:` block is rewritten, so the rest of the file keeps its comments
    and layout; if that text surgery would not reproduce the intended data (an unusual layout),
    the whole file is dumped instead. The file is replaced atomically: no reader sees half of it.
    """
    text = path.read_text()
    params = yaml.safe_load(text) or {}
    tuned = params.get("tuned") or {}
    tuned[profile] = {**(tuned.get(profile) or {}), family: dict(config)}
    params["tuned"] = tuned
    new = _replace_top_level(text, "tuned", yaml.safe_dump({"tuned": tuned}, sort_keys=False))
    if yaml.safe_load(new) != params:
        new = yaml.safe_dump(params, sort_keys=False)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(new)
    partial.replace(path)


def _replace_top_level(text: str, key: str, block: str) -> str:
    """`text` with the top-level `key:` entry (and its indented lines) replaced by `block`."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{key}:")), None)
    if start is None:
        return text + ("\n" if text and not text.endswith("\n") else "") + block
    end = start + 1
    while end < len(lines) and (lines[end][:1] in (" ", "\t") or not lines[end].strip()):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # keep the blank lines that follow
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def tune_family(
    family: str,
    profile: str,
    trials: int,
    report: Report = print,
    max_concurrent: int = 1,
    *,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    params_file: Path = PARAMS_FILE,
) -> TuneResult:
    """Search `family`'s hyper-parameters; write the best to params.yaml and log it in MLflow.

    One parent run `tune-<family>-<profile>` in the family's experiment; one child run per trial
    with its parameters and `val_loss` per epoch. Ray is started here (one CPU per concurrent
    trial) unless it is already running, and shut down again only if it was started here.
    """
    if family not in NETWORKS:
        raise ValueError(f"can tune {NETWORKS}, not {family!r}")
    if trials < 1 or max_concurrent < 1:
        raise ValueError("trials and max_concurrent must be at least 1")
    started = time.perf_counter()
    cfg = load_config(family, profile, params_file)
    tracking_uri = absolute_tracking_uri(tracking_uri)
    client = registry.configure(tracking_uri)
    experiment_id = registry.experiment(family)
    report(f"{family}: loading the {profile} panel")
    panel = load_panel(cfg)
    data = (panel, vocab_for(panel))
    with mlflow.start_run(run_name=f"tune-{family}-{profile}", experiment_id=experiment_id) as run:
        tracking = _Tracking(tracking_uri, experiment_id, run.info.run_id)
        mlflow.log_params({"family": family, "profile": profile, "trials": trials})
        mlflow.log_params({"objective": f"{OBJECTIVE} on fold 0 validation", "scheduler": "ASHA"})
        report(
            f"{family}: {trials} trials, {max_concurrent} at a time (parent run {run.info.run_id})"
        )
        try:
            best, loss = _search(
                family, profile, cfg, trials, max_concurrent, data, tracking, report
            )
        finally:
            _close_orphans(client, tracking)
        mlflow.log_params({f"best.{k}": v for k, v in best.items()})
        mlflow.log_metric(BEST, loss)
        mlflow.log_dict(best, "best_config.json")
    write_tuned(profile, family, best, params_file)
    report(f"{family}: best {OBJECTIVE} {loss:.5f} with {best}; written to {params_file}")
    return TuneResult(best, loss, trials, tracking.parent_run_id, time.perf_counter() - started)
