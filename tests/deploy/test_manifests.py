"""Dockerfile, docker-compose.yml, the KubeRay manifests and CI agree with the code: every
variable they set is a setting, every port is one the product listens on, every command is a
real `stockcopilot` command, and the RayService serves exactly deploy/serve.yaml.

Static checks only (no Docker, no cluster, no session services)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from api.settings import Settings
from tests.deploy.manifests import (
    DEPLOY,
    ROOT,
    app_paths,
    check_cli,
    container_ports,
    dockerfile_stages,
    environment,
    exec_form,
    interpolate,
    load_yaml,
    load_yaml_docs,
    locked_version,
    settings_env,
    stockcopilot_argvs,
    validate_settings,
    volume_mounts,
)

COMPOSE = load_yaml(ROOT / "docker-compose.yml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP = SERVICES["app"]
OUR_IMAGE = {name for name, s in SERVICES.items() if s.get("image") == APP["image"]}
K8S = [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in load_yaml_docs(path)]
(RAY_SERVICE,) = [doc for doc in K8S if doc["kind"] == "RayService"]
SERVE_YAML = load_yaml(DEPLOY / "serve.yaml")
API_PORT = Settings.model_fields["port"].default
RAY_DASHBOARD_PORT, RAY_METRICS_PORT = 8265, 8080  # Ray's / KubeRay's defaults
# Variables that Ray and MLflow read themselves may sit beside our settings; other images' own.
TOOL_ENV = re.compile(r"^(RAY_|MLFLOW_|FORWARDED_ALLOW_IPS$)")  # FORWARDED_…: uvicorn in Serve
THIRD_PARTY_ENV = re.compile(r"^(POSTGRES_|GF_|ES_JAVA_OPTS$|ELASTICSEARCH_|discovery\.|xpack\.)")


def test_compose_runs_the_product_and_its_services_with_elk_optional() -> None:
    core = {"app", "db", "redis", "mlflow", "prometheus", "grafana"}
    assert core <= set(SERVICES)
    assert all("profiles" not in SERVICES[name] for name in core)
    elk = {name for name, s in SERVICES.items() if "elk" in s.get("profiles", [])}
    assert {"elasticsearch", "kibana"} <= elk and elk & {"filebeat", "logstash"}
    assert {"app", "mlflow"} == OUR_IMAGE and all("build" in SERVICES[n] for n in OUR_IMAGE)


@pytest.mark.parametrize("service", ["app", "mlflow"])
def test_our_containers_set_only_settings_with_valid_values(service: str) -> None:
    env = {k: v for k, v in environment(SERVICES[service]).items() if k in settings_env()}
    unknown = {k for k in environment(SERVICES[service]) if k not in env and not TOOL_ENV.match(k)}
    assert not unknown, f"{service} sets variables that are not Settings fields: {unknown}"
    resolved = {k: v for k, v in ((k, interpolate(v)) for k, v in env.items()) if v is not None}
    validate_settings(resolved)  # e.g. PORT an int, FEED_MODE one of replay|live|off


def test_third_party_containers_set_only_their_own_variables() -> None:
    for name, service in SERVICES.items():
        if name not in OUR_IMAGE:
            strays = {k for k in environment(service) if not THIRD_PARTY_ENV.match(k)}
            assert not strays, f"{name}: {strays}"


def test_compose_and_image_commands_are_real_cli_commands() -> None:
    for name in OUR_IMAGE:
        argvs = stockcopilot_argvs(exec_form(SERVICES[name]["command"]))
        assert argvs, f"{name} does not run a stockcopilot command"
        for argv in argvs:
            check_cli(argv)
    runtime = dockerfile_stages()[-1]
    (cmd,) = runtime.all("CMD")
    check_cli(exec_form(cmd))
    assert APP["command"] == exec_form(cmd)  # compose runs what the image runs
    assert exec_form(SERVICES["mlflow"]["command"])[1] == "mlflow-ui"


def test_kubernetes_job_commands_and_readme_commands_are_real() -> None:
    assert job_containers()
    for container in job_containers():
        argvs = stockcopilot_argvs(container["command"])
        assert argvs, container["name"]
        for argv in argvs:
            check_cli(argv)
    readme = (DEPLOY / "k8s" / "README.md").read_text()
    lines = re.findall(r"(?:^|-- )(stockcopilot [^\n#]*)", readme, flags=re.MULTILINE)
    assert len(lines) >= 4
    for line in lines:
        check_cli(exec_form(line.strip()))


def test_ports_agree_with_settings_serve_config_and_image() -> None:
    assert SERVE_YAML["http_options"]["port"] == API_PORT
    assert int(environment(APP)["PORT"]) == API_PORT
    assert API_PORT in container_ports(APP)
    exposed = {int(p) for args in dockerfile_stages()[-1].all("EXPOSE") for p in args.split()}
    assert {API_PORT, RAY_DASHBOARD_PORT, RAY_METRICS_PORT} <= exposed
    for container in ray_containers():
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == API_PORT and ports["metrics"] == RAY_METRICS_PORT
    head = RAY_SERVICE["spec"]["rayClusterConfig"]["headGroupSpec"]
    (head_container,) = head["template"]["spec"]["containers"]
    head_ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
    assert head_ports["dashboard"] == RAY_DASHBOARD_PORT
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_healthchecks_probe_real_routes_on_the_api_port() -> None:
    assert "/healthz" in app_paths()
    probe = f"127.0.0.1:{API_PORT}/healthz"
    assert probe in " ".join(APP["healthcheck"]["test"])
    (image_check,) = dockerfile_stages()[-1].all("HEALTHCHECK")
    assert "/healthz" in image_check and "PORT" in image_check


def test_dependencies_wait_for_healthchecks_that_exist() -> None:
    assert APP["depends_on"]["db"]["condition"] == "service_healthy"
    assert APP["depends_on"]["redis"]["condition"] == "service_healthy"
    for name, service in SERVICES.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"
    assert "--appendonly" in SERVICES["redis"]["command"]
    assert "pg_isready" in SERVICES["db"]["healthcheck"]["test"]


def test_app_talks_to_the_compose_database_and_redis() -> None:
    env = environment(APP)
    database, redis = interpolate(env["DATABASE_URL"]), interpolate(env["REDIS_URL"])
    db_env = environment(SERVICES["db"])
    assert database == (
        f"postgresql://postgres:{interpolate(db_env['POSTGRES_PASSWORD'])}@db:5432/"
        f"{db_env['POSTGRES_DB']}"
    )
    assert redis is not None and redis.startswith("redis://redis:6379")


def test_mlflow_ui_reads_the_apps_store() -> None:
    mlflow = SERVICES["mlflow"]
    uri = environment(APP)["MLFLOW_TRACKING_URI"]
    assert environment(mlflow)["MLFLOW_TRACKING_URI"] == uri
    store_dir = str(Path(uri.removeprefix("sqlite:///")).parent)
    assert volume_mounts(APP)[store_dir] == volume_mounts(mlflow)[store_dir]
    argv = mlflow["command"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert int(argv[argv.index("--port") + 1]) in container_ports(mlflow)


def test_dockerfile_builds_with_uv_from_the_lock_and_runs_as_non_root() -> None:
    stages = dockerfile_stages()
    assert any(s.base.startswith("ghcr.io/astral-sh/uv:") for s in stages)
    runs = " ".join(args for s in stages for args in s.all("RUN"))
    assert "uv sync --frozen --no-dev" in runs
    runtime = stages[-1]
    python = (ROOT / ".python-version").read_text().strip()
    assert runtime.base.startswith(f"python:{python}-slim")
    (user,) = runtime.all("USER")
    assert user not in ("root", "0")
    env_keys = {m for args in runtime.all("ENV") for m in re.findall(r"(\w+)=", args)}
    others = {k for k in env_keys - set(settings_env()) if not TOOL_ENV.match(k)}
    assert others <= {"PATH", "PYTHONUNBUFFERED"}
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".venv", ".env", ".stockcopilot", "mlruns"} <= ignored
    needed = {"pyproject.toml", "uv.lock", "README.md", "params.yaml", "api", "serving"}
    assert not needed & ignored  # the build (hatchling reads README.md) and `up` use them


def test_rayservice_serves_exactly_deploy_serve_yaml() -> None:
    spec = RAY_SERVICE["spec"]
    served = yaml.safe_load(spec["serveConfigV2"])
    assert served == SERVE_YAML
    (application,) = ServeDeploySchema.model_validate(served).applications
    assert application.import_path == "serving.app:app_builder"


def test_rayservice_upgrades_blue_green_and_autoscales() -> None:
    spec = RAY_SERVICE["spec"]
    assert RAY_SERVICE["apiVersion"] == "ray.io/v1"
    assert spec["upgradeStrategy"]["type"] == "NewCluster"
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == locked_version("ray")
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] < group["maxReplicas"]
    images = {c["image"] for c in [*ray_containers(), *job_containers()]}
    assert len(images) == 1  # head, workers and jobs run one build


def test_kubernetes_settings_come_from_a_configmap_and_secret_of_settings() -> None:
    (config,) = [doc for doc in K8S if doc["kind"] == "ConfigMap"]
    assert {k for k in config["data"] if not TOOL_ENV.match(k)} <= set(settings_env())
    secret_keys = re.findall(r"--from-literal=(\w+)=", (DEPLOY / "k8s" / "README.md").read_text())
    assert {"DATABASE_URL", "REDIS_URL", "JWT_SECRET"} <= set(secret_keys)
    assert set(secret_keys) <= set(settings_env())
    settings = {k: v for k, v in config["data"].items() if k in settings_env()}
    validate_settings({**settings, "JWT_SECRET": secrets.token_urlsafe(48)})
    assert config["data"]["FORWARDED_ALLOW_IPS"] == config["data"]["TRUSTED_PROXIES"]
    for container in [*ray_containers(), *job_containers()]:
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {config["metadata"]["name"], "stockcopilot-secrets"}
    store_dir = str(Path(config["data"]["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent)
    for container in ray_containers():
        assert store_dir in {m["mountPath"] for m in container["volumeMounts"]}


def test_ci_runs_make_test_on_the_projects_python_with_uv_cached() -> None:
    workflow = load_yaml(ROOT / ".github" / "workflows" / "ci.yml")
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(step.get("run") == "make test" for step in steps)
    python = (ROOT / ".python-version").read_text().strip()
    setups = [s for s in steps if s.get("uses", "").startswith("actions/setup-python")]
    assert setups and all(s["with"]["python-version"] == python for s in setups)
    assert any(
        s.get("uses", "").startswith("astral-sh/setup-uv") and s["with"]["enable-cache"]
        for s in steps
    )


# --- helpers


def job_containers() -> list[dict[str, Any]]:
    jobs = [doc for doc in K8S if doc["kind"] == "Job"]
    return [c for job in jobs for c in job["spec"]["template"]["spec"]["containers"]]


def ray_containers() -> list[dict[str, Any]]:
    cluster = RAY_SERVICE["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]
