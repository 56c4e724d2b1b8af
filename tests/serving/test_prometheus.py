"""Observability of the Serve stack, checked by a real Prometheus: the API's counts add up over
two ingress replicas, every dashboard and alert query works on what the stack exports, and
model replicas report errors to Sentry with personal data scrubbed."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ray import serve
from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE
from websockets.asyncio.client import connect

from api.settings import Settings
from contracts import ForecastRequest
from tests.live_server import free_port
from tests.serving.conftest import ServeCluster
from tests.system_packages import require_programs

# the first test of the package to use the shared Serve stack waits for it to start
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}

# Series that exist only once something happens that this shared stack never causes: a 5xx
# (every family has a healthy champion), a processed feed day (the feed is off in tests, which
# play days themselves), a live provider's round (the same), a chat provider call (none is
# configured), a 429 (limits are 1e6/min), a replica error, or scored live forecasts (only
# after tests/serving/test_live_ab.py). Queries on them must still run; they may return nothing.
EVENT_ONLY = {
    'status=~"5.."': "no 5xx",
    "stockcopilot_feed_days_total": "feed off",
    "stockcopilot_feed_provider_failures": "no live provider",
    "stockcopilot_feed_last_success_timestamp_seconds": "no live provider",
    "stockcopilot_chat_requests_total": "no chat provider",
    "stockcopilot_rate_limit_rejections_total": "no 429",
    "ray_serve_deployment_error_counter_total": "no replica error",
    "stockcopilot_live_pinball_loss": "no scored live forecast",
}


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr` now; raises unless Prometheus answers success."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}


def prometheus_config(cluster: ServeCluster, token_file: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with only targets, paths and intervals changed: the
    Serve proxy for the app's /metrics, this cluster's discovery file for Ray's agents."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    assert config["rule_files"] == [ALERTS_YML.name]
    config["rule_files"] = [str(ALERTS_YML)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["stockcopilot-api"]
    api["authorization"]["credentials_file"] = str(token_file)
    api["static_configs"] = [{"targets": [cluster.url.removeprefix("http://")]}]
    (discovery,) = jobs["ray"]["file_sd_configs"]
    (deployed,) = discovery["files"]
    assert Path(deployed).name == PROMETHEUS_SERVICE_DISCOVERY_FILE  # Ray's name for it
    discovery["files"] = [str(Path(cluster.session_dir) / PROMETHEUS_SERVICE_DISCOVERY_FILE)]
    discovery["refresh_interval"] = "1s"
    return config


def until(check: Callable[[], bool], seconds: float) -> bool:
    """Poll `check` on a deadline; its last answer."""
    deadline = time.monotonic() + seconds
    while not (done := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return done


@pytest.fixture(scope="module")
def prometheus(
    serve_cluster: ServeCluster, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    programs = require_programs({"prometheus": "prometheus", "promtool": "prometheus"})
    tmp = tmp_path_factory.mktemp("prometheus")
    assert settings.metrics_token is not None
    token = tmp / "metrics_token"
    token.write_text(settings.metrics_token.get_secret_value())
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(serve_cluster, token)))
    checked = subprocess.run(
        [programs["promtool"], "check", "config", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    address = f"127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [
            programs["prometheus"],
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "prometheus.log").open("w"),
    )
    try:
        ready = until(lambda: _answers(f"http://{address}/-/ready"), 30)
        assert ready, (tmp / "prometheus.log").read_text()[-2000:]
        yield Prometheus(f"http://{address}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# Routes no other test sends through this package's shared Serve stack, so their totals are
# exactly what this test sent, whichever tests ran before on the same cluster.
OWN_ROUTES = {
    "/api/v1/stocks/{ticker}": [f"/api/v1/stocks/{t}" for t in ("AAPL", "KO", "XOM", "MSFT")],
    "/api/v1/market/overview": ["/api/v1/market/overview"] * 2,
    "/api/v1/models": ["/api/v1/models"] * 2,  # every family's catalogue, from model replicas
    "/api/v1/predictions/{ticker}/history": ["/api/v1/predictions/KO/history"] * 2,
    "unmatched": ["/no/such/page"] * 3 + ["/api/v1/models/"],  # 404s, and a 307 to the route
}
# forecasts answered by the model replicas, then twice from the cache (the route is shared)
PREDICTIONS = [("KO", "2022-05-02"), ("XOM", "2022-05-02"), ("KO", "2022-05-02")] * 2


async def send_load(url: str, headers: dict[str, str]) -> int:
    """The bounded load: OWN_ROUTES, PREDICTIONS and one notifications socket. Every request
    on a fresh connection, so the proxy spreads them over both ingress replicas."""
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=fresh) as c:
        paths = [p for ps in OWN_ROUTES.values() for p in ps]
        answers = await asyncio.gather(*(c.get(p) for p in paths))
        wanted = {"/no/such/page": 404, "/api/v1/models/": 307}
        assert [a.status_code for a in answers] == [wanted.get(p, 200) for p in paths], [
            a.text[:200] for a in answers
        ]
        for ticker, day in PREDICTIONS:
            answer = await c.get(f"/api/v1/predictions/{ticker}", params={"as_of": day})
            assert answer.status_code == 200, answer.text
    token = headers["Authorization"].removeprefix("Bearer ")
    ws = url.replace("http://", "ws://")
    async with connect(f"{ws}/ws/notifications?token={token}") as socket:
        json.loads(await asyncio.wait_for(socket.recv(), 60))  # the welcome: the socket is open
    return len(paths) + 1


def concrete(expr: str) -> str:
    """A Grafana query as Prometheus runs it: built-in intervals given, `$variable` = all."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and template variable of every dashboard."""
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                found.append((f"{path.stem}: {panel['title']}", concrete(target["expr"])))
        for variable in board["templating"]["list"]:
            metric, label = re.fullmatch(
                r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"]
            ).groups()  # type: ignore[union-attr]
            found.append((f"{path.stem}: ${variable['name']}", f"count by ({label}) ({metric})"))
    return found


COMPARISON = re.compile(r"^(?P<left>.+?)\s*(==|!=|>=|<=|>|<)\s*(?P<right>[\d.e*+\s]+)$", re.S)


def alert_queries() -> list[tuple[str, str]]:
    """(alert, PromQL that must return series): an alert's condition is false on a healthy
    stack (so it returns nothing), so the expression left of its comparison is checked."""
    found = []
    for group in yaml.safe_load(ALERTS_YML.read_text())["groups"]:
        for rule in group["rules"]:
            expr = " ".join(rule["expr"].split())
            match = COMPARISON.match(expr)
            assert match, f"{rule['alert']}: no threshold comparison in {expr}"
            found.append((f"alert {rule['alert']}", match["left"]))
    return found


def test_request_totals_add_up_over_both_ingress_replicas_and_every_query_answers(
    serve_cluster: ServeCluster, prometheus: Prometheus, user_headers: dict[str, str]
) -> None:
    sent = asyncio.run(send_load(serve_cluster.url, user_headers))
    expected = {route: len(paths) for route, paths in OWN_ROUTES.items()}
    expected["/ws/notifications"] = 1
    assert sum(expected.values()) == sent

    def totals() -> dict[str, float]:
        by_route = prometheus.by("sum by (route) (stockcopilot_http_requests_total)", "route")
        return {route: by_route.get(route, 0.0) for route in expected}

    def counted() -> bool:
        return totals() == expected

    assert until(counted, 60), f"Prometheus counted {totals()}, sent {expected}"
    own = "|".join(re.escape(route) for route in expected).replace("\\", "\\\\")
    total = prometheus.query(f'sum(stockcopilot_http_requests_total{{route=~"{own}"}})')
    assert float(total[0]["value"][1]) == sent  # exactly the requests sent, no double counts
    replicas = prometheus.by(
        f'sum by (replica) (stockcopilot_http_requests_total{{route=~"{own}"}})', "replica"
    )
    assert len(replicas) == 2 and sum(replicas.values()) == sent  # both ingress replicas' counts
    latency = prometheus.query(
        f'sum(stockcopilot_http_request_duration_seconds_count{{route=~"{own}"}})'
    )
    assert float(latency[0]["value"][1]) == sent
    hits = prometheus.by("sum by (result) (stockcopilot_prediction_cache_total)", "result")
    assert hits.get("hit", 0) >= len(PREDICTIONS) - 2 and hits.get("miss", 0) >= 2

    queries = dashboard_queries() + alert_queries()
    checked: dict[str, int] = {}

    def every_query_answers() -> bool:
        # the most series seen: a scrape that times out on this busy machine (1 s) marks that
        # target's series stale until the next one
        for where, expr in queries:
            key = f"{where} | {expr}"
            checked[key] = max(checked.get(key, 0), len(prometheus.query(expr)))
        return all(n > 0 for key, n in checked.items() if not _event_only(key))

    answered = until(every_query_answers, 90)
    print("\nPromQL checked (series returned):")
    for key, n in checked.items():
        print(f"  {n:3d}  {key}" + (f"  [event-only: {_event_only(key)}]" if n == 0 else ""))
    empty = [key for key, n in checked.items() if n == 0 and not _event_only(key)]
    up = prometheus.by("up", "instance")
    assert answered and not empty, f"no series for {empty}; targets up: {up}"
    _alert_rules_loaded(prometheus)


def _event_only(key: str) -> str | None:
    return next((why for needle, why in EVENT_ONLY.items() if needle in key), None)


def _alert_rules_loaded(prometheus: Prometheus) -> None:
    """Prometheus loaded alerts.yml through rule_files and evaluates every rule without error."""
    promtool = require_programs({"promtool": "prometheus"})["promtool"]
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS_YML)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = {
        r["alert"] for g in yaml.safe_load(ALERTS_YML.read_text())["groups"] for r in g["rules"]
    }

    def evaluated() -> dict[str, str]:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return {r["name"]: r["health"] for g in groups for r in g["rules"]}

    assert until(lambda: evaluated() == dict.fromkeys(names, "ok"), 30), evaluated()


def test_a_model_replica_reports_errors_to_sentry_without_personal_data(
    serve_cluster: ServeCluster, settings: Settings
) -> None:
    """A failed call in a GarchForecaster replica (Serve logs it at error level) reaches Sentry
    through the replica's own SDK, initialised as the ingress's is: the e-mail address in the
    error is masked before it leaves the replica."""
    handle = serve.get_deployment_handle("GarchForecaster", app_name="stockcopilot")
    request = ForecastRequest(
        family="garch", variant="champion", version="jane.doe@example.com", series=[]
    )
    with pytest.raises(Exception, match=r"jane\.doe@example\.com"):
        handle.forecast.remote(request).result(timeout_s=60)

    def from_the_replica(event: dict[str, Any]) -> bool:
        return event.get("logger") == "ray.serve" and "GarchForecaster" in repr(event)

    event = serve_cluster.sentry.wait_for(from_the_replica, 60)
    assert event is not None, f"no replica event among {len(serve_cluster.sentry.events)}"
    assert event["release"] == f"stock-copilot@{settings.app_version}"  # api.observability's init
    raw = repr(event)
    assert "jane.doe@example.com" not in raw and "j***@example.com" in raw
