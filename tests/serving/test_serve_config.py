"""deploy/serve.yaml deploys the same graph as build_app, with sizing that matches the code."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from api.settings import Settings
from serving.app import SERVE_ENV, app_builder
from serving.config import ServeAppConfig

SERVE_YAML = Path(__file__).resolve().parents[2] / "deploy" / "serve.yaml"


def test_serve_yaml_is_a_valid_serve_config_whose_args_build_the_app() -> None:
    raw = yaml.safe_load(SERVE_YAML.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    (application,) = schema.applications
    assert application.import_path == "serving.app:app_builder"
    args = dict(application.args)
    config = ServeAppConfig.model_validate({**args, "settings": Settings().model_dump()})
    assert config.model.max_replicas >= 2  # room to scale out under load
    assert app_builder(args) is not None  # the graph binds from these args alone


def test_yaml_sizing_is_the_code_default() -> None:
    raw = yaml.safe_load(SERVE_YAML.read_text())
    args = raw["applications"][0]["args"]
    default = ServeAppConfig(settings=Settings())
    for part in ("model", "classical", "ensemble", "ingress"):
        expected = getattr(default, part).model_dump()
        assert {k: expected[k] for k in args[part]} == args[part], part


def test_yaml_runs_replicas_with_the_same_serve_environment_as_make_up() -> None:
    raw = yaml.safe_load(SERVE_YAML.read_text())
    assert raw["applications"][0]["runtime_env"]["env_vars"] == SERVE_ENV
