"""`stockcopilot` commands for data scientists and operators: train, evaluate, register, promote."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.settings import Settings
from contracts import FAMILIES, MEMBERS, NETWORKS


def _client(settings: Settings):
    from training import registry

    return registry.configure(settings.mlflow_tracking_uri)


def _with_db[T](settings: Settings, action: Callable[..., Awaitable[T]]) -> T:
    """Run `action(client, conn)` with MLflow configured and the alias-audit database open."""
    from pipelines.embedded import resolved_settings
    from pipelines.models import connect

    client = _client(settings)
    with resolved_settings(settings, need_redis=False) as ready:

        async def run() -> T:
            conn = await connect(ready.database_url or "")
            try:
                return await action(client, conn)
            finally:
                await conn.close()

        return asyncio.run(run())


def register_commands(
    app: typer.Typer, settings_factory: Callable[[], Settings], console: Console
) -> None:
    @app.command()
    def featurize() -> None:
        """Compute features and targets for every ticker (DVC `featurize` stage)."""
        from pipelines.train import featurize as run
        from training.data import read_bars

        settings_factory()
        console.print(f"wrote {run(read_bars())}")

    @app.command()
    def train(
        model: Annotated[str, typer.Option(help=f"{', '.join(FAMILIES)} or all")],
        profile: Annotated[str, typer.Option(help="params.yaml profile")] = "full",
        register: Annotated[bool, typer.Option(help="register the result in MLflow")] = False,
    ) -> None:
        """Walk-forward evaluate and fit a family (or all); log to MLflow; write a model card."""
        from pipelines.train import featurize
        from pipelines.train import train as train_family
        from training.data import FEATURES_FILE, read_bars

        settings = settings_factory()
        _client(settings)
        if not FEATURES_FILE.exists():
            console.print(f"computing features once into {FEATURES_FILE} ...")
            featurize(read_bars())
        families = [*MEMBERS, "ensemble"] if model == "all" else [model]
        unknown = set(families) - set(FAMILIES)
        if unknown:
            raise typer.BadParameter(f"unknown model {sorted(unknown)}; choose {FAMILIES}")
        for family in families:
            card = train_family(family, profile, console.print, progress=True)
            for line in card.skill().values():
                console.print(f"  {family}: {line['verdict']} (skill {line['skill_vs_rw']:+.2%})")
        if register:
            registered()

    @app.command()
    def baselines(
        profile: Annotated[str, typer.Option(help="params.yaml profile")] = "full",
    ) -> None:
        """Walk-forward the baselines alone (random walk, drift, EWMA, GARCH-t, GJR-t, HAR) on
        the profile's folds: the yardstick a network must beat, in minutes."""
        from pipelines.train import baseline_table

        settings_factory()
        for line in baseline_table(profile, console.print):
            typer.echo(line)

    @app.command()
    def tune(
        model: Annotated[str, typer.Option(help=", ".join(NETWORKS))],
        trials: Annotated[int, typer.Option(help="configurations to sample", min=1)],
        profile: Annotated[str, typer.Option(help="params.yaml profile")] = "full",
        concurrent: Annotated[int, typer.Option(help="trials at once, one CPU each", min=1)] = 1,
    ) -> None:
        """Search hyper-parameters with Ray Tune (ASHA); write the best to params.yaml `tuned`."""
        from training.config import PARAMS_FILE
        from training.tune import tune_family

        settings = settings_factory()
        if model not in NETWORKS:
            raise typer.BadParameter(f"unknown model {model!r}; choose {NETWORKS}")
        result = tune_family(
            model,
            profile,
            trials,
            console.print,
            concurrent,
            tracking_uri=settings.mlflow_tracking_uri,
        )
        console.print(f"best {model} config (val pinball {result.best_val_loss:.5f}):")
        console.print(json.dumps(result.best_config, indent=2))
        console.print(
            f"written to {PARAMS_FILE.resolve()} under tuned.{profile}.{model}; "
            f"MLflow parent run {result.parent_run_id} ({result.seconds:.0f} s)"
        )

    @app.command()
    def evaluate(
        out: Annotated[Path, typer.Option(help="report folder")] = Path("reports"),
    ) -> None:
        """Collect the walk-forward table of every trained model and both baselines, and the
        plot data (skill per fold, reliability, fan chart); log them all to MLflow."""
        from pipelines.plots import log_evaluation, write_plots
        from pipelines.report import write_walkforward_report

        settings = settings_factory()
        models_dir = Path("models")
        report = write_walkforward_report(models_dir, out)
        plots = write_plots(models_dir, out / "plots")
        run_id = log_evaluation(
            [report, report.with_suffix(".json")], plots, settings.mlflow_tracking_uri
        )
        console.print(f"wrote {report} and {', '.join(str(p) for p in plots.paths)}")
        console.print(f"fan chart: {plots.model} on {plots.ticker}; MLflow run {run_id}")

    @app.command("register")
    def registered() -> None:
        """Register trained models: champion if a family has none, else challenger."""
        from pipelines.models import default_actor, register_trained

        settings = settings_factory()
        versions = _with_db(settings, lambda c, conn: register_trained(c, conn, default_actor()))
        console.print(f"registered: {json.dumps(versions)}")

    @app.command()
    def models() -> None:
        """Versions, aliases and key walk-forward metrics of every family."""
        from training import registry

        client = _client(settings_factory())
        table = Table(
            "model", "version", "aliases", "h1 skill", "h5 skill", "h20 skill", "h5 cover80", "run"
        )
        for family in FAMILIES:
            for v in registry.versions(client, family):
                m = v.metrics
                table.add_row(
                    family,
                    v.version,
                    ",".join(v.aliases) or "-",
                    *(f"{m.get(f'h{h}.skill_vs_rw', float('nan')):+.2%}" for h in (1, 5, 20)),
                    f"{m.get('h5.coverage_80', float('nan')):.3f}",
                    (v.run_id or "")[:8],
                )
        Console(width=140).print(table)  # never truncate versions or metrics

    @app.command()
    def promote(
        model: Annotated[str, typer.Option(help="model family")],
        version: Annotated[str, typer.Option(help="registered version")],
        alias: Annotated[str, typer.Option(help="champion or challenger")] = "champion",
        reason: Annotated[str, typer.Option(help="why (kept in the audit trail)")] = "manual",
    ) -> None:
        """Point an alias at a version (serving follows); the move is audited."""
        from pipelines.models import RegistryError, default_actor, move_alias

        try:
            move = _with_db(
                settings_factory(),
                lambda c, conn: move_alias(c, conn, model, alias, version, default_actor(), reason),
            )
        except RegistryError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        console.print(f"{model} {alias}: {move.from_version or '-'} → {move.to_version}")

    @app.command()
    def rollback(
        model: Annotated[str, typer.Option(help="model family")],
        reason: Annotated[str, typer.Option(help="why (kept in the audit trail)")] = "manual",
    ) -> None:
        """Move champion back to the previous champion."""
        from pipelines.models import RegistryError, default_actor
        from pipelines.models import rollback as run

        try:
            move = _with_db(
                settings_factory(), lambda c, conn: run(c, conn, model, default_actor(), reason)
            )
        except RegistryError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        console.print(f"{model} champion: {move.from_version} → {move.to_version}")

    @app.command("mlflow-ui")
    def mlflow_ui(
        port: Annotated[int, typer.Option(help="UI port")] = 5000,
        host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    ) -> None:
        """Open the MLflow UI on the same store (operators move aliases there)."""
        from training.registry import is_server

        settings = settings_factory()
        if is_server(settings.mlflow_tracking_uri):  # a team's `mlflow server` serves its own UI
            console.print(f"MLflow UI: {settings.mlflow_tracking_uri}")
            raise typer.Exit(0)
        console.print(f"MLflow UI on http://{host}:{port} (store {settings.mlflow_tracking_uri})")
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--host",
            host,
            "--port",
            str(port),
        ]
        raise typer.Exit(subprocess.call(command))  # noqa: S603 - fixed argv, no shell
