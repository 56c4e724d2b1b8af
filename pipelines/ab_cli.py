"""`stockcopilot ab`: set a family's challenger traffic share and judge the live A/B test."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from api.settings import Settings
from contracts import FAMILIES, HORIZONS


def with_conn[T](settings: Settings, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `action(conn)` on a migrated database, starting the embedded one if no URL is set."""
    from pipelines.embedded import resolved_settings
    from pipelines.models import connect

    with resolved_settings(settings, need_redis=False) as ready:

        async def run() -> T:
            conn = await connect(ready.database_url or "")
            try:
                return await action(conn)
            finally:
                await conn.close()

        return asyncio.run(run())


def _family(model: str) -> str:
    if model not in FAMILIES:
        raise typer.BadParameter(f"unknown model {model!r}; choose one of {', '.join(FAMILIES)}")
    return model


def _number(value: float, digits: int = 6) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def register_ab_commands(
    app: typer.Typer, settings_factory: Callable[[], Settings], console: Console
) -> None:
    """Add the `ab` sub-app (set, report) to `app`."""
    ab_app = typer.Typer(help="A/B tests between champion and challenger.", no_args_is_help=True)
    app.add_typer(ab_app, name="ab")

    @ab_app.command("set")
    def set_weight(
        model: Annotated[str, typer.Option(help="model family")],
        challenger_weight: Annotated[
            float, typer.Option(help="share of callers routed to the challenger, 0 to 1")
        ],
        reason: Annotated[str, typer.Option(help="why (kept in the audit trail)")] = "manual",
    ) -> None:
        """Route a share of callers to the challenger; running servers follow without a restart."""
        from api.db.ab import AbWeightRepository
        from pipelines.models import default_actor

        family = _family(model)
        if not (math.isfinite(challenger_weight) and 0 <= challenger_weight <= 1):
            raise typer.BadParameter(
                f"challenger weight must be between 0 and 1, got {challenger_weight}"
            )
        change = with_conn(
            settings_factory(),
            lambda conn: AbWeightRepository(conn).set(
                family, challenger_weight, default_actor(), reason
            ),
        )
        before = "-" if change.from_weight is None else f"{change.from_weight:g}"
        console.print(f"{family} challenger weight: {before} → {change.to_weight:g}")

    @ab_app.command("report")
    def report(
        model: Annotated[str, typer.Option(help="model family")],
        horizon: Annotated[int, typer.Option(help="trading days: 1, 5 or 20")] = 5,
        champion_version: Annotated[
            str | None, typer.Option(help="only this champion version (default: all)")
        ] = None,
        challenger_version: Annotated[
            str | None, typer.Option(help="only this challenger version (default: all)")
        ] = None,
    ) -> None:
        """Score forecasts whose horizon has passed, then test champion vs challenger losses."""
        from api.services.outcomes import live_ab

        family = _family(model)
        if horizon not in HORIZONS:
            raise typer.BadParameter(f"horizon {horizon} is not offered; choose one of {HORIZONS}")
        versions = {
            variant: version
            for variant, version in (
                ("champion", champion_version),
                ("challenger", challenger_version),
            )
            if version is not None
        }
        live = with_conn(
            settings_factory(), lambda conn: live_ab(conn, family, [horizon], versions)
        )
        (result,) = live.reports
        console.print(
            f"resolved {live.resolved} forecast(s) now; {family} challenger weight "
            f"{live.challenger_weight:g}; h={horizon}, {result.method}"
        )
        table = Table("variant", "versions", "mean pinball loss", title=f"{family} A/B")
        table.add_row(
            "champion",
            ",".join(result.versions["champion"]) or "-",
            _number(result.mean_loss_champion),
        )
        table.add_row(
            "challenger",
            ",".join(result.versions["challenger"]) or "-",
            _number(result.mean_loss_challenger),
        )
        Console().print(table)
        console.print(
            f"n={result.n_pairs} ({result.n_dates} dates), DM statistic "
            f"{_number(result.dm_stat, 3)}, p-value {_number(result.p_value, 4)}"
        )
        console.print(f"recommendation: {result.recommendation}")
