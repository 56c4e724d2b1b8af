"""Prometheus, Grafana and Filebeat config agree with docker-compose.yml and the app: scrape
targets are compose services on the ports they listen on, dashboards are provisioned Grafana
JSON on the provisioned datasource, and dashboards and alerts query only metrics that exist
(tests/serving/test_prometheus.py runs every query on a live stack)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from api.metrics import SPECS
from api.settings import Settings
from tests.deploy.manifests import (
    DEPLOY,
    ROOT,
    app_paths,
    container_ports,
    load_yaml,
    promql_metrics,
    volume_mounts,
)

SERVICES: dict[str, dict[str, Any]] = load_yaml(ROOT / "docker-compose.yml")["services"]
PROMETHEUS = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = {p.stem: json.loads(p.read_text()) for p in (GRAFANA / "dashboards").glob("*.json")}
(DATASOURCE,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
    "datasources"
]
RAY_TEMP_DIR = "/tmp/ray"  # where Ray (started by `stockcopilot up`) keeps its session files
ALERTS = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
# what api/metrics.py exports, from its one definition of each metric
APP_METRICS = frozenset(name for spec in SPECS for name in spec.exposed())


def service_ports(name: str) -> set[int]:
    listens = {"app": {Settings.model_fields["port"].default}}.get(name, set())
    return container_ports(SERVICES[name]) | listens


def compose_mount(service: str, host_path: Path) -> str:
    """Where a service mounts a folder or file of this repository."""
    for target, source in volume_mounts(SERVICES[service]).items():
        if (ROOT / source).resolve() == host_path.resolve():
            return target
    raise AssertionError(f"{service} does not mount {host_path.relative_to(ROOT)}")


def test_prometheus_scrapes_compose_services_on_their_ports_and_paths() -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    static = [t for j in jobs.values() for c in j.get("static_configs", []) for t in c["targets"]]
    assert static
    for target in static:
        host, port = target.rsplit(":", 1)
        assert host in SERVICES, f"{target} is not a compose service"
        assert int(port) in service_ports(host), target
    api = jobs["stockcopilot-api"]
    assert api["static_configs"][0]["targets"] == [f"app:{Settings.model_fields['port'].default}"]
    assert api["metrics_path"] in app_paths()
    assert compose_mount("prometheus", DEPLOY / "prometheus" / "prometheus.yml") == (
        "/etc/prometheus/prometheus.yml"
    )


def test_prometheus_scrapes_the_api_with_the_apps_metrics_token() -> None:
    api = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}["stockcopilot-api"]
    assert api["authorization"]["type"] == "Bearer"
    secret = api["authorization"]["credentials_file"].removeprefix("/run/secrets/")
    assert secret in SERVICES["prometheus"]["secrets"]
    compose = load_yaml(ROOT / "docker-compose.yml")
    assert compose["secrets"][secret] == {"environment": "METRICS_TOKEN"}  # what the app reads
    assert "METRICS_TOKEN" in SERVICES["app"]["environment"]


def test_prometheus_finds_ray_metrics_in_the_volume_the_app_shares() -> None:
    (ray,) = [job for job in PROMETHEUS["scrape_configs"] if job["job_name"] == "ray"]
    (discovery,) = [f for sd in ray["file_sd_configs"] for f in sd["files"]]
    assert discovery == f"{RAY_TEMP_DIR}/prom_metrics_service_discovery.json"
    shared = volume_mounts(SERVICES["app"])[RAY_TEMP_DIR]
    assert volume_mounts(SERVICES["prometheus"])[RAY_TEMP_DIR] == shared


def test_grafana_provisions_the_compose_prometheus_and_the_dashboards_folder() -> None:
    provisioning = compose_mount("grafana", GRAFANA / "provisioning")
    assert provisioning == "/etc/grafana/provisioning"
    assert DATASOURCE["type"] == "prometheus"
    host, port = DATASOURCE["url"].removeprefix("http://").split(":")
    assert host == "prometheus" and int(port) in service_ports("prometheus")
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "stockcopilot.yml")[
        "providers"
    ]
    assert provider["options"]["path"] == compose_mount("grafana", GRAFANA / "dashboards")


def test_dashboards_are_grafana_json_on_the_provisioned_datasource() -> None:
    uid = DATASOURCE["uid"]
    assert set(DASHBOARDS) == {"api", "serving", "models", "business"}
    assert len({d["uid"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)
    for name, board in DASHBOARDS.items():
        assert board["title"] and board["schemaVersion"] >= 36 and board["panels"], name
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"]), name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid, (name, panel["title"])
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs), (name, panel["title"])
            assert all(t["datasource"]["uid"] == uid and t["expr"] for t in panel["targets"])
        for variable in board["templating"]["list"]:
            assert variable["datasource"]["uid"] == uid


def test_dashboards_query_only_metrics_that_exist() -> None:
    used: set[str] = set()
    for name, board in DASHBOARDS.items():
        queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
        queries += [v["query"]["query"] for v in board["templating"]["list"]]
        for query in queries:
            metrics = promql_metrics(query)
            assert metrics, (name, query)
            unknown = {m for m in metrics if not m.startswith("ray_") and m not in APP_METRICS}
            assert not unknown, f"{name}: {unknown} in {query}"
            used |= metrics
    missing = {m for m in APP_METRICS if not m.endswith(("_sum", "_count"))} - used
    assert not missing, f"no dashboard shows {missing}"
    assert any(m.startswith("ray_serve_") for m in promql_metrics_of("serving"))


def test_alert_rules_are_loaded_and_query_only_metrics_that_exist() -> None:
    assert PROMETHEUS["rule_files"] == ["alerts.yml"]  # beside prometheus.yml
    rules = [rule for group in ALERTS["groups"] for rule in group["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules) >= 5
    for rule in rules:
        metrics = promql_metrics(rule["expr"])
        unknown = {m for m in metrics if not m.startswith("ray_") and m not in APP_METRICS | {"up"}}
        assert metrics and not unknown, (rule["alert"], unknown)
        assert rule["labels"]["severity"] in {"page", "warn"} and rule["annotations"]["summary"]
    used = {m for r in rules for m in promql_metrics(r["expr"])}
    assert {"stockcopilot_http_requests_total", "stockcopilot_feed_up"} <= used
    assert any(m.startswith("ray_serve_") for m in used)


def test_the_apps_metrics_from_ray_lose_rays_prefix() -> None:
    """The ingress replicas export the API's metrics through Ray (`ray_stockcopilot_*`);
    dashboards query one name, whichever path a metric took."""
    (ray,) = [job for job in PROMETHEUS["scrape_configs"] if job["job_name"] == "ray"]
    (rename,) = [r for r in ray["metric_relabel_configs"] if r.get("target_label") == "__name__"]
    assert rename["source_labels"] == ["__name__"]
    pattern = re.compile(rename["regex"])
    for name in APP_METRICS:
        match = pattern.fullmatch(f"ray_{name}")
        assert match and match.expand(rename["replacement"].replace("$1", r"\1")) == name
    assert pattern.fullmatch("ray_serve_deployment_replica_healthy") is None


def test_promql_metric_extraction() -> None:
    expr = (
        'sum by (family, variant) (rate(stockcopilot_predictions_total{family=~"$f"}[15m])) '
        "/ on (family) group_left sum by (family) (rate(stockcopilot_predictions_total[15m]))"
        " / clamp_min(max(stockcopilot_users), 1e-9) > 0.5"
    )
    assert promql_metrics(expr) == {"stockcopilot_predictions_total", "stockcopilot_users"}
    assert promql_metrics("label_values(ray_serve_deployment_replica_healthy, deployment)") == {
        "ray_serve_deployment_replica_healthy"
    }


def test_filebeat_ships_app_logs_to_the_compose_elasticsearch() -> None:
    filebeat = load_yaml(DEPLOY / "elk" / "filebeat.yml")
    (host,) = filebeat["output.elasticsearch"]["hosts"]
    name, port = host.removeprefix("http://").split(":")
    assert name == "elasticsearch" and "elk" in SERVICES[name]["profiles"]
    assert int(port) in service_ports(name)
    assert compose_mount("filebeat", DEPLOY / "elk" / "filebeat.yml").endswith("/filebeat.yml")
    decoders = [
        p["decode_json_fields"] for p in filebeat["processors"] if "decode_json_fields" in p
    ]
    assert decoders[0]["fields"] == ["message"]
    # the API logs from Ray workers: their files are in the volume the app shares
    (ray_input,) = filebeat["filebeat.inputs"]
    assert all(path.startswith(RAY_TEMP_DIR) for path in ray_input["paths"])
    shared = volume_mounts(SERVICES["app"])[RAY_TEMP_DIR]
    assert volume_mounts(SERVICES["filebeat"])[RAY_TEMP_DIR] == shared
    assert SERVICES["app"]["labels"]["co.elastic.logs/enabled"] == "true"


def promql_metrics_of(dashboard: str) -> set[str]:
    board = DASHBOARDS[dashboard]
    return {m for p in board["panels"] for t in p["targets"] for m in promql_metrics(t["expr"])}
