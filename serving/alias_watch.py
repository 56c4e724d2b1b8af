"""Alias watch: every model replica follows its family's MLflow aliases, vets each newly aliased
version before it serves, keeps it on probation, and rolls it back when it fails.

A moved alias loads the new version first and then swaps the pinned routing, so in-flight
requests finish on the version they started with. Moves made outside stockcopilot (e.g. in the
MLflow UI) and automatic rollbacks are written to the alias history and announced on the
notification stream (see serving.guard for the probation rules). A challenger that loses its
live A/B test significantly is demoted: its alias is removed, so it takes no more traffic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg
import structlog
from mlflow import MlflowClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api import channels
from api.db.ab import PredictionLogRepository
from api.db.models import AliasEvent, AliasEventRepository
from api.db.pool import create_pool
from api.services.outcomes import live_ab
from api.settings import Settings
from contracts import ALIASES, CHALLENGER, CHAMPION, ModelUnavailable, Routing, model_name
from serving.guard import Probation, RollbackPolicy, challenger_verdict, live_verdict
from serving.local import LocalPredictor
from training import registry

ROLLBACK_ACTOR = "auto-rollback"
ANNOUNCE_ONCE_S = 600  # one announcement per alias move across replicas within this window
# the challenger's live A/B is judged every this many alias polls: each look scores the
# family's due outcomes, which need not happen at the pace aliases are followed
CHALLENGER_CHECK_POLLS = 5

log = structlog.get_logger(__name__)


class AliasAudit:
    """Alias switches serving observed (e.g. made in the MLflow UI) and automatic rollbacks, in
    the alias history; rollbacks are also published for the notification stream."""

    CHANNEL = channels.MODELS

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await create_pool(self._settings)
        return self._pool

    async def latest(self, family: str, alias: str) -> AliasEvent | None:
        found = await AliasEventRepository(await self.pool()).history(
            model_name(family), alias, limit=1
        )
        return found[0] if found else None

    async def observed(
        self, family: str, alias: str, old: str | None, new: str | None
    ) -> AliasEvent:
        """Record a move unless its mover (the CLI, a rollback) already did; returns the event
        that put `new` under the alias."""
        latest = await self.latest(family, alias)
        if latest and latest.to_version == new:
            return latest
        event = AliasEvent(
            model_name(family),
            alias,
            old,
            new,
            "serving",
            "alias moved outside stockcopilot (e.g. MLflow UI)",
            datetime.now(UTC),
        )
        await AliasEventRepository(await self.pool()).record(event)
        log.info("alias_switch", family=family, alias=alias, old=old, new=new)
        return event

    async def rollback(
        self, family: str, alias: str, broken: str | None, restored: str | None, reason: str
    ) -> None:
        await self.observed(family, alias, restored, broken)  # the move that failed, if unseen
        await AliasEventRepository(await self.pool()).record(
            AliasEvent(model_name(family), alias, broken, restored, ROLLBACK_ACTOR, reason)
        )
        event = {
            "type": "model_rollback",
            "family": family,
            "alias": alias,
            "from_version": broken,
            "to_version": restored,
            "reason": reason,
        }
        await self._publish(event)

    async def switched(self, family: str, event: AliasEvent) -> None:
        """Announce that serving now follows an alias move (once, whichever replica is first);
        rollbacks were announced by `rollback`."""
        if event.actor == ROLLBACK_ACTOR or event.to_version is None:
            return
        message = {
            "type": "model_promoted",
            "family": family,
            "alias": event.alias,
            "from_version": event.from_version,
            "to_version": event.to_version,
            "actor": event.actor,
            "reason": event.reason,
        }
        # replicas see a move within one alias poll of each other; the first one announces it
        once = f"announced:{event.model}:{event.alias}:{event.from_version}->{event.to_version}"
        await self._publish(message, once)

    async def _publish(self, event: Mapping[str, object], once: str | None = None) -> None:
        redis = Redis.from_url(self._settings.redis_url or "")
        try:
            if once is None or await redis.set(once, "1", nx=True, ex=ANNOUNCE_ONCE_S):
                await redis.publish(self.CHANNEL, json.dumps(event))
        except (RedisError, OSError) as exc:  # the audit row is written; the push is best effort
            log.warning("model_notification_failed", error=type(exc).__name__)
        finally:
            await redis.aclose()


class AliasWatch:
    """One family's aliases as this replica serves them: polled every `poll_s`, vetted, pinned
    into `predictor`, with each new version on probation until it has proved itself."""

    def __init__(
        self,
        family: str,
        client: MlflowClient,
        predictor: LocalPredictor,
        settings: Settings,
    ) -> None:
        self.family = family
        self._client = client
        self._predictor = predictor
        self._poll_s = settings.alias_poll_s
        self._policy = RollbackPolicy.from_settings(settings)
        self._audit = AliasAudit(settings)
        self._trials: dict[str, Probation] = {}
        self._tasks: set[asyncio.Task] = set()
        self._vetted = asyncio.Event()
        self._next_challenger_check = 0.0  # time.monotonic() of the next live A/B look
        self._task = asyncio.get_event_loop().create_task(self._follow())

    async def vetted(self) -> None:
        """Return once the first poll has pinned what this replica serves."""
        await self._vetted.wait()

    def stop(self) -> None:
        self._task.cancel()

    def probation(self, alias: str) -> Probation | None:
        """The probation of the version now under `alias`, while it lasts."""
        return self._trials.get(alias)

    def trial_for(self, variant: str, version: str | None) -> Probation | None:
        """The probation `version` is on when it serves `variant`, if it is on one."""
        trial = self._trials.get(variant)
        return trial if trial is not None and trial.candidate == version else None

    async def _follow(self) -> None:
        """Switch to a newly aliased version only once it has loaded; roll back one that fails.

        Requests are answered throughout from the last vetted routing (`pin`), so a broken
        version never receives traffic.
        """
        active: Routing | None = None
        while True:
            try:
                active = await self._vet(active)
                self._vetted.set()
                await self._judge_live()
                await self._judge_challenger(active)
            except Exception as exc:  # a failed poll keeps serving what it has
                log.warning("alias_poll_failed", family=self.family, error=str(exc))
            await asyncio.sleep(self._poll_s)

    async def _vet(self, active: Routing | None) -> Routing:
        wanted = await self._predictor.registry_routing(self.family)
        vetted = wanted if active is None else active.model_copy()
        for alias in ALIASES:
            new = getattr(wanted, alias)
            if active is not None and new == getattr(active, alias):
                continue
            if active is None:  # a (re)started replica: what did `new` replace, and when?
                event = await self._audit.latest(self.family, alias)
                event = event if event is not None and event.to_version == new else None
                old = event.from_version if event is not None else None
            else:
                event, old = None, getattr(active, alias)
            try:
                if new is not None:
                    await self._predictor.preload(self.family, new)
            except ModelUnavailable as exc:
                await self._rollback(alias, new, old, f"version {new} failed to load: {exc}")
                vetted = vetted.model_copy(update={alias: old})
                continue
            if active is not None:
                event = await self._audit.observed(self.family, alias, old, new)
                await self._audit.switched(self.family, event)
            await self._start_probation(alias, new, event)
            vetted = vetted.model_copy(update={alias: new})
        self._predictor.pin(vetted)
        return vetted

    async def _start_probation(self, alias: str, new: str | None, event: AliasEvent | None) -> None:
        """Put `new` on probation against the version it replaced, unless the move was itself
        a rollback (the restored version already proved itself)."""
        self._trials.pop(alias, None)
        if new is None or event is None or event.actor == ROLLBACK_ACTOR:
            return
        fallback = event.from_version
        if fallback is not None:
            try:
                await self._predictor.preload(self.family, fallback)
            except ModelUnavailable:
                fallback = None  # nothing to fall back on; the probation still watches
        self._trials[alias] = Probation(
            alias, new, fallback, event.at or datetime.now(UTC), self._policy
        )
        log.info(
            "probation_started", family=self.family, alias=alias, version=new, fallback=fallback
        )

    async def _judge_live(self) -> None:
        """Shadow-score the previous champion while the new one is on live probation, and roll
        the new one back once live outcomes show it significantly worse."""
        trial = self._trials.get(CHAMPION)
        if trial is None or not trial.shadowing():
            self._predictor.shadow(self.family, None)
            return
        assert trial.fallback is not None
        self._predictor.shadow(self.family, trial.fallback)
        log_repo = PredictionLogRepository(await self._audit.pool())
        await log_repo.resolve_due(self.family)
        rows = await log_repo.version_losses(self.family, [trial.candidate, trial.fallback])
        reason = live_verdict(rows, trial.candidate, trial.fallback, self._policy.live_alpha)
        if reason is not None:
            trial.fail(reason)
            self._predictor.shadow(self.family, None)
            await self._rollback(CHAMPION, trial.candidate, trial.fallback, reason)

    async def _judge_challenger(self, active: Routing) -> None:
        """Demote the challenger once the live A/B test says it loses significantly to the
        champion, comparing only the versions under the two aliases now."""
        if active.challenger is None or active.champion is None:
            return
        now = time.monotonic()
        if now < self._next_challenger_check:
            return
        self._next_challenger_check = now + self._poll_s * CHALLENGER_CHECK_POLLS
        pair = {CHAMPION: active.champion, CHALLENGER: active.challenger}
        result = await live_ab(await self._audit.pool(), self.family, versions=pair)
        reason = challenger_verdict(result.reports, self._policy.live_alpha)
        if reason is None:
            return
        trial = self.trial_for(CHALLENGER, active.challenger)
        if trial is not None:
            trial.fail(reason)
        await self._rollback(CHALLENGER, active.challenger, None, reason)

    def judge(self, trial: Probation) -> None:
        """Roll `trial`'s candidate back (in the background) once its calls breach the policy."""
        reason = trial.breach()
        if reason is None or trial.ended:
            return
        trial.fail(reason)
        task = asyncio.get_running_loop().create_task(
            self._rollback(trial.alias, trial.candidate, trial.fallback, reason)
        )
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _rollback(
        self, alias: str, broken: str | None, restore: str | None, why: str
    ) -> None:
        """Point the alias back at the version it replaced (or remove it if there was none) and
        say so everywhere. Skipped when the alias has moved on meanwhile (another replica's
        rollback, an operator)."""
        current = await asyncio.to_thread(registry.alias_version, self._client, self.family, alias)
        if current != broken:
            return
        if restore is None and alias == CHAMPION:  # nothing to go back to: keep it, say why
            log.error("champion_unservable", family=self.family, version=broken, reason=why)
            return
        log.error(
            "auto_rollback",
            family=self.family,
            alias=alias,
            broken=broken,
            restored=restore,
            reason=why,
        )
        if restore is not None:
            await asyncio.to_thread(registry.set_alias, self._client, self.family, alias, restore)
        else:
            await asyncio.to_thread(
                self._client.delete_registered_model_alias, model_name(self.family), alias
            )
        await self._audit.rollback(self.family, alias, broken, restore, why[:500])
