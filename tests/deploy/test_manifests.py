"""Dockerfile, docker-compose.yml, the KubeRay manifests and CI agree with the code: every
variable they set is a setting, every port is one the product listens on, every command is a
real `stockcopilot` (or `mlflow`) command, the RayService serves exactly deploy/serve.yaml, and
MLflow is one tracking server (Postgres store, S3 artefacts) that everything else reaches over
HTTP: sqlite is for embedded mode only.

Static checks only (no Docker, no cluster, no session services)."""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header
from ray.serve.schema import ServeDeploySchema
from sqlalchemy.engine import make_url

from api.settings import Settings
from tests.deploy.manifests import (
    DEPLOY,
    ROOT,
    app_paths,
    check_cli,
    compose_command,
    container_env,
    container_ports,
    dockerfile_stages,
    environment,
    exec_form,
    interpolate,
    load_yaml,
    load_yaml_docs,
    locked_version,
    mlflow_command,
    readme_secrets,
    resolved_env,
    settings_env,
    stockcopilot_argvs,
    validate_settings,
    volume_mounts,
)

COMPOSE = load_yaml(ROOT / "docker-compose.yml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP = SERVICES["app"]
OUR_IMAGE = {name for name, s in SERVICES.items() if s.get("image") == APP["image"]}
MLFLOW = SERVICES["mlflow"]
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
K8S = [doc for path in K8S_FILES for doc in load_yaml_docs(path)]
K8S_README = (DEPLOY / "k8s" / "README.md").read_text()
(RAY_SERVICE,) = [doc for doc in K8S if doc["kind"] == "RayService"]
(MLFLOW_DEPLOYMENT,) = [doc for doc in K8S if doc["kind"] == "Deployment"]
(MLFLOW_K8S_SERVICE,) = [doc for doc in K8S if doc["kind"] == "Service"]
SERVE_YAML = load_yaml(DEPLOY / "serve.yaml")
API_PORT = Settings.model_fields["port"].default
RAY_DASHBOARD_PORT, RAY_METRICS_PORT = 8265, 8080  # Ray's / KubeRay's defaults
# Variables that Ray and MLflow read themselves may sit beside our settings; other images' own.
TOOL_ENV = re.compile(r"^(RAY_|MLFLOW_|FORWARDED_ALLOW_IPS$)")  # FORWARDED_…: uvicorn in Serve
# what the S3 client inside `mlflow server` reads: the artefact store's endpoint and keys
S3_ENV = re.compile(r"^(AWS_|MLFLOW_S3_)")
THIRD_PARTY_ENV = re.compile(
    r"^(POSTGRES_|PG(HOST|USER|PASSWORD|DATABASE)$|MINIO_|MLFLOW_BUCKET$|GF_|ES_JAVA_OPTS$"
    r"|ELASTICSEARCH_|discovery\.|xpack\.)"
)


def test_compose_runs_the_product_and_its_services_with_elk_optional() -> None:
    core = {"app", "db", "redis", "mlflow", "mlflow-db", "mlflow-migrate", "minio", "minio-bucket"}
    core |= {"prometheus", "grafana"}
    assert core <= set(SERVICES)
    assert all("profiles" not in SERVICES[name] for name in core)
    elk = {name for name, s in SERVICES.items() if "elk" in s.get("profiles", [])}
    assert {"elasticsearch", "kibana"} <= elk and elk & {"filebeat", "logstash"}
    assert {"app", "mlflow", "mlflow-migrate"} == OUR_IMAGE
    assert all("build" in SERVICES[n] for n in OUR_IMAGE)


@pytest.mark.parametrize("service", ["app", "mlflow", "mlflow-migrate"])
def test_our_containers_set_only_settings_with_valid_values(service: str) -> None:
    env = {k: v for k, v in environment(SERVICES[service]).items() if k in settings_env()}
    tools = re.compile(f"{TOOL_ENV.pattern}|{S3_ENV.pattern}") if service == "mlflow" else TOOL_ENV
    unknown = {k for k in environment(SERVICES[service]) if k not in env and not tools.match(k)}
    assert not unknown, f"{service} sets variables that are not Settings fields: {unknown}"
    resolved = {k: v for k, v in ((k, interpolate(v)) for k, v in env.items()) if v is not None}
    validate_settings(resolved)  # e.g. PORT an int, FEED_MODE one of replay|live|off


def test_third_party_containers_set_only_their_own_variables() -> None:
    for name, service in SERVICES.items():
        if name not in OUR_IMAGE:
            strays = {k for k in environment(service) if not THIRD_PARTY_ENV.match(k)}
            assert not strays, f"{name}: {strays}"


def test_compose_and_image_commands_are_real_cli_commands() -> None:
    argvs = stockcopilot_argvs(exec_form(APP["command"]))
    assert argvs, "the app does not run a stockcopilot command"
    for argv in argvs:
        check_cli(argv)
    for name in OUR_IMAGE - {"app"}:  # MLflow's own server and schema migration
        mlflow_command(compose_command(SERVICES[name]))
    runtime = dockerfile_stages()[-1]
    (cmd,) = runtime.all("CMD")
    check_cli(exec_form(cmd))
    assert APP["command"] == exec_form(cmd)  # compose runs what the image runs
    assert compose_command(MLFLOW)[:2] == ["mlflow", "server"]


def test_kubernetes_job_commands_and_readme_commands_are_real() -> None:
    assert job_containers()
    for container in job_containers():
        argvs = stockcopilot_argvs(container["command"])
        assert argvs, container["name"]
        for argv in argvs:
            check_cli(argv)
    lines = re.findall(r"(?:^|-- )(stockcopilot [^\n#]*)", K8S_README, flags=re.MULTILINE)
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


def test_compose_mlflow_server_keeps_runs_in_postgres_and_artefacts_in_the_bucket() -> None:
    options = mlflow_command(compose_command(MLFLOW), resolved_env(MLFLOW))
    store = make_url(options["backend_store_uri"])
    db_env = environment(SERVICES["db"])
    assert (store.drivername, store.host, store.port) == ("postgresql+psycopg", "db", 5432)
    password = interpolate(db_env["POSTGRES_PASSWORD"])
    assert (store.username, store.password) == ("postgres", password)
    assert store.database not in (None, db_env["POSTGRES_DB"])  # MLflow's own database
    creates = " ".join(compose_command(SERVICES["mlflow-db"]))
    assert f"CREATE DATABASE {store.database}" in creates
    assert compose_command(SERVICES["mlflow-migrate"]) == [
        "mlflow",
        "db",
        "upgrade",
        options["backend_store_uri"],
    ]
    assert options["serve_artifacts"] and options["default_artifact_root"] is None
    bucket = urlsplit(options["artifacts_destination"])
    assert bucket.scheme == "s3"
    assert bucket.netloc == interpolate(environment(SERVICES["minio-bucket"])["MLFLOW_BUCKET"])
    endpoint = urlsplit(resolved_env(MLFLOW)["MLFLOW_S3_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and "minio" in SERVICES
    minio_env = resolved_env(SERVICES["minio"])
    assert resolved_env(MLFLOW)["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert resolved_env(MLFLOW)["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert options["host"] == "0.0.0.0" and options["port"] in container_ports(MLFLOW)
    assert f"127.0.0.1:{options['port']}/health" in " ".join(MLFLOW["healthcheck"]["test"])
    waits = {name: spec["condition"] for name, spec in MLFLOW["depends_on"].items()}
    done = "service_completed_successfully"
    assert waits == {"mlflow-migrate": done, "minio-bucket": done}


def test_compose_services_reach_mlflow_over_http_and_only_its_server_holds_s3_keys() -> None:
    options = mlflow_command(compose_command(MLFLOW), resolved_env(MLFLOW))
    tracking = urlsplit(environment(APP)["MLFLOW_TRACKING_URI"])
    assert (tracking.scheme, tracking.hostname) == ("http", "mlflow")
    assert tracking.port == options["port"]
    assert APP["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # MLflow's DNS-rebinding guard must let the app's Host header through (/health is exempt,
    # so a healthy server says nothing about it)
    assert is_allowed_host_header(options["allowed_hosts"].split(","), tracking.netloc)
    for name, service in SERVICES.items():
        if name != "mlflow":
            assert not {k for k in environment(service) if S3_ENV.match(k)}, name
        assert not any(target.startswith("/app/mlruns") for target in volume_mounts(service))
    assert "mlruns" not in COMPOSE["volumes"]
    assert "sqlite" not in (ROOT / "docker-compose.yml").read_text()  # embedded mode only


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
    mlflow_pod = MLFLOW_DEPLOYMENT["spec"]["template"]["spec"]
    mlflow_containers = [*mlflow_pod["containers"], *mlflow_pod["initContainers"]]
    images = {c["image"] for c in [*ray_containers(), *job_containers(), *mlflow_containers]}
    assert len(images) == 1  # head, workers, jobs and the MLflow server run one build


def test_kubernetes_settings_come_from_a_configmap_and_secret_of_settings() -> None:
    (config,) = [doc for doc in K8S if doc["kind"] == "ConfigMap"]
    assert {k for k in config["data"] if not TOOL_ENV.match(k)} <= set(settings_env())
    secret_keys = readme_secrets(K8S_README)["stockcopilot-secrets"]
    assert {"DATABASE_URL", "REDIS_URL", "JWT_SECRET"} <= set(secret_keys)
    assert set(secret_keys) <= set(settings_env())
    settings = {k: v for k, v in config["data"].items() if k in settings_env()}
    validate_settings({**settings, "JWT_SECRET": secrets.token_urlsafe(48)})
    assert config["data"]["FORWARDED_ALLOW_IPS"] == config["data"]["TRUSTED_PROXIES"]
    for container in [*ray_containers(), *job_containers()]:
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {config["metadata"]["name"], "stockcopilot-secrets"}


def test_kubernetes_mlflow_server_reads_postgres_from_its_secret_and_writes_to_s3() -> None:
    (container,) = MLFLOW_DEPLOYMENT["spec"]["template"]["spec"]["containers"]
    refs = {ref["secretRef"]["name"] for ref in container["envFrom"]}
    assert refs == {"stockcopilot-mlflow"}
    secret = readme_secrets(K8S_README)["stockcopilot-mlflow"]
    assert {"MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret)
    assert not set(secret) & set(container_env(container))  # the secrets come from the Secret only
    options = mlflow_command(container["command"], {**container_env(container), **secret})
    assert "MLFLOW_BACKEND_STORE_URI" not in " ".join(container["command"])
    assert make_url(options["backend_store_uri"]).drivername == "postgresql+psycopg"
    assert options["serve_artifacts"] and urlsplit(options["artifacts_destination"]).scheme == "s3"
    (migrate,) = MLFLOW_DEPLOYMENT["spec"]["template"]["spec"]["initContainers"]
    assert 'mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"' in migrate["command"][-1]
    assert migrate["envFrom"] == container["envFrom"] and migrate["image"] == container["image"]
    assert MLFLOW_DEPLOYMENT["spec"]["strategy"]["type"] == "Recreate"
    assert MLFLOW_DEPLOYMENT["spec"]["replicas"] == 1  # one MLflow version against the schema
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert options["host"] == "0.0.0.0" and ports["http"] == options["port"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_kubernetes_pods_reach_mlflow_over_http_without_a_shared_volume() -> None:
    (config,) = [doc for doc in K8S if doc["kind"] == "ConfigMap"]
    tracking = urlsplit(config["data"]["MLFLOW_TRACKING_URI"])
    service = MLFLOW_K8S_SERVICE
    (port,) = service["spec"]["ports"]
    assert (tracking.scheme, tracking.hostname) == ("http", service["metadata"]["name"])
    assert tracking.port == port["port"]
    selector = service["spec"]["selector"].items()
    assert selector <= MLFLOW_DEPLOYMENT["spec"]["template"]["metadata"]["labels"].items()
    for template in other_pod_templates():  # the Service selects the MLflow pod alone
        assert not selector <= template.get("metadata", {}).get("labels", {}).items()
    (mlflow,) = MLFLOW_DEPLOYMENT["spec"]["template"]["spec"]["containers"]
    allowed = container_env(mlflow)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert is_allowed_host_header(allowed, tracking.netloc)
    assert not [doc for doc in K8S if doc["kind"] == "PersistentVolumeClaim"]
    assert not [key for key in config["data"] if S3_ENV.match(key)]  # S3 keys: MLflow's alone
    for container in [*ray_containers(), *job_containers()]:
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert not [path for path in mounts if path.startswith("/app/mlruns")], mounts
        assert not [key for key in container_env(container) if S3_ENV.match(key)]
    for path in K8S_FILES:
        assert "sqlite" not in path.read_text(), path.name  # embedded mode only
        assert f"kubectl apply -f deploy/k8s/{path.name}" in K8S_README


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


def other_pod_templates() -> list[dict[str, Any]]:
    """The pod templates of the Ray groups and the Jobs (everything but the MLflow server)."""
    cluster = RAY_SERVICE["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    jobs = [doc for doc in K8S if doc["kind"] == "Job"]
    return [g["template"] for g in groups] + [j["spec"]["template"] for j in jobs]


def ray_containers() -> list[dict[str, Any]]:
    cluster = RAY_SERVICE["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]
