"""Operator actions on the registry: register, promote, roll back — each move audited."""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from mlflow import MlflowClient

from api.db.migrate import upgrade
from api.db.models import AliasEvent, AliasEventRepository
from contracts import FAMILIES
from training import registry

MODELS_DIR = Path("models")


class RegistryError(RuntimeError):
    """An operator request the registry cannot honour; the message says why."""


@dataclass(frozen=True)
class AliasMove:
    family: str
    alias: str
    from_version: str | None
    to_version: str


def default_actor() -> str:
    try:
        return getpass.getuser()
    except OSError:
        return "unknown"


async def _record(conn: asyncpg.Connection, move: AliasMove, actor: str, reason: str) -> None:
    await AliasEventRepository(conn).record(
        AliasEvent(
            registry.model_name(move.family),
            move.alias,
            move.from_version,
            move.to_version,
            actor,
            reason,
        )
    )


async def move_alias(
    client: MlflowClient,
    conn: asyncpg.Connection,
    family: str,
    alias: str,
    version: str,
    actor: str,
    reason: str,
) -> AliasMove:
    """Point `alias` at `version` in MLflow and record who, when, from, to and why."""
    previous = registry.alias_version(client, family, alias)
    known = [v.version for v in registry.versions(client, family)]
    if version not in known:
        raise RegistryError(
            f"{registry.model_name(family)} has no version {version}; "
            f"registered versions: {', '.join(known) or 'none'}"
        )
    registry.set_alias(client, family, alias, version)
    move = AliasMove(family, alias, previous, version)
    await _record(conn, move, actor, reason)
    return move


async def rollback(
    client: MlflowClient,
    conn: asyncpg.Connection,
    family: str,
    actor: str,
    reason: str,
    alias: str = "champion",
) -> AliasMove:
    """Move `alias` back to the version it pointed at before its current one."""
    current = registry.alias_version(client, family, alias)
    if current is None:
        raise RegistryError(f"{family} has no {alias} to roll back")
    events = await AliasEventRepository(conn).history(registry.model_name(family), alias)
    previous = next(
        (
            e.from_version
            for e in events
            if e.to_version == current and e.from_version and e.from_version != current
        ),
        None,
    )
    if previous is None:
        raise RegistryError(
            f"no earlier {alias} of {family} is recorded; promote a version instead"
        )
    return await move_alias(
        client, conn, family, alias, previous, actor, f"rollback from {current}: {reason}"
    )


def _registered_version(client: MlflowClient, family: str, run_id: str) -> str | None:
    return next((v.version for v in registry.versions(client, family) if v.run_id == run_id), None)


def _version_of_run(client: MlflowClient, family: str, run_id: str) -> str:
    version = _registered_version(client, family, run_id)
    if version is None:
        raise RegistryError(
            f"the ensemble was fitted on {family} run {run_id}, which is not "
            "registered; register the members first or retrain the ensemble"
        )
    return version


async def register_trained(
    client: MlflowClient, conn: asyncpg.Connection, actor: str, models_dir: Path = MODELS_DIR
) -> dict[str, str]:
    """Register every trained family in `models_dir`; champion if none yet, else challenger.

    The ensemble is registered last, tagged with the exact member versions it was fitted with.
    """
    versions: dict[str, str] = {}
    for family in FAMILIES:
        run_file = models_dir / family / "run.json"
        if not run_file.exists():
            continue
        run = json.loads(run_file.read_text())
        if _registered_version(client, family, run["run_id"]) is not None:
            continue  # this training run is registered already
        tags = {"run_id": run["run_id"], "profile": run["profile"]}
        if family == "ensemble":
            bundle = json.loads((models_dir / family / "bundle" / "bundle.json").read_text())
            for member, info in bundle["members"].items():
                tags[f"member.{member}.version"] = _version_of_run(client, member, info["run_id"])
        version = registry.register(run["model_uri"], family, tags)
        versions[family] = version
        alias = (
            "champion"
            if registry.alias_version(client, family, "champion") is None
            else "challenger"
        )
        await move_alias(
            client,
            conn,
            family,
            alias,
            version,
            actor,
            f"registered from training run {run['run_id']}",
        )
    if not any((models_dir / f / "run.json").exists() for f in FAMILIES):
        raise RegistryError(f"nothing trained under {models_dir}; run `stockcopilot train` first")
    (models_dir / "registry.json").write_text(json.dumps(versions, indent=2))
    return versions


async def connect(database_url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(database_url)
    await upgrade(conn)
    return conn
