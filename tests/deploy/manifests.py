"""Readers for the deployment files, and the code-side facts they must agree with."""

from __future__ import annotations

import functools
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml

from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# What api/metrics.py exports (the names the dashboards may use besides Ray's `ray_*`).
APP_METRICS = frozenset(
    {
        "stockcopilot_http_requests_total",
        "stockcopilot_http_request_duration_seconds_bucket",
        "stockcopilot_http_request_duration_seconds_sum",
        "stockcopilot_http_request_duration_seconds_count",
        "stockcopilot_predictions_total",
        "stockcopilot_prediction_cache_total",
        "stockcopilot_feed_lag_seconds",
        "stockcopilot_feed_days_total",
        "stockcopilot_websocket_connections",
        "stockcopilot_chat_requests_total",
        "stockcopilot_rate_limit_rejections_total",
        "stockcopilot_live_pinball_loss",
        "stockcopilot_users",
        "stockcopilot_portfolios",
        "stockcopilot_conversations",
    }
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def settings_env() -> dict[str, str]:
    """Environment variable name -> Settings field (pydantic-settings: the upper-cased field
    name, unless a validation alias names the variable)."""
    names = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        names[(alias if isinstance(alias, str) else name).upper()] = name
    return names


def validate_settings(env: dict[str, str]) -> Settings:
    """Validate environment values as Settings would read them (without reading this process's
    environment or .env)."""
    fields = settings_env()
    return Settings.model_validate({fields[k.upper()]: v for k, v in env.items()})


_DEFAULTED = re.compile(r"\$\{(\w+):?-([^}]*)\}")
_UNRESOLVED = re.compile(r"\$\{?\w+")


def interpolate(value: Any) -> str | None:
    """A compose value with `${VAR:-default}` resolved to its default; None when it depends on a
    variable without a default (its value is the operator's)."""
    if value is None:
        return None
    text = _DEFAULTED.sub(lambda m: m.group(2), str(value))
    return None if _UNRESOLVED.search(text) else text


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports of a compose service's `ports` (short syntax)."""
    return {int(str(spec).split("/")[0].rsplit(":", 1)[-1]) for spec in service.get("ports", [])}


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source (a named volume or a host path) of a compose service."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = str(spec).split(":")[:2]
        mounts[target] = source
    return mounts


# --- Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG" and not stages and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
        elif instruction == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            stages[-1].instructions.append((instruction, rest))
    return stages


def exec_form(args: str | list[str]) -> list[str]:
    """An argument list from a Dockerfile CMD (JSON or shell form) or a compose `command`."""
    if isinstance(args, list):
        return args
    return json.loads(args) if args.startswith("[") else shlex.split(args)


# --- the CLI


def check_cli(argv: list[str]) -> None:
    """Fail unless argv is a `stockcopilot` command line the typer app accepts."""
    from pipelines.cli import app

    assert argv[0] == "stockcopilot", argv
    command: Any = typer.main.get_command(app)  # typer ships its own click: duck-type groups
    path, args = ["stockcopilot"], list(argv[1:])
    while hasattr(command, "commands"):
        assert args, f"`{' '.join(path)}` needs a subcommand"
        name = args.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`{' '.join(path)}` has no command {name!r}"
        command, path = sub, [*path, name]
    try:
        command.make_context(" ".join(path), args)  # parses and validates; runs nothing
    except Exception as exc:  # click's UsageError family: unknown option, bad value, ...
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        raise AssertionError(f"`{' '.join(argv)}`: {message}") from exc


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a `cmd && cmd` script, split into argv lists."""
    return [shlex.split(part) for part in re.split(r"&&|;|\|\|", script) if part.strip()]


def stockcopilot_argvs(command: list[str]) -> list[list[str]]:
    """Every `stockcopilot ...` command line a container command runs (directly or via a shell)."""
    if command[:2] in (["/bin/bash", "-c"], ["bash", "-c"], ["/bin/sh", "-c"], ["sh", "-c"]):
        return [argv for argv in shell_commands(command[2]) if argv[0] == "stockcopilot"]
    return [command] if command and command[0] == "stockcopilot" else []


@functools.cache
def app_paths() -> frozenset[str]:
    """Every HTTP path the API answers: its OpenAPI paths plus the undocumented /metrics."""
    from api.app import create_app

    app = create_app(Settings.model_validate({}))
    direct = {route.path for route in app.routes if hasattr(route, "path")}
    return frozenset(set(app.openapi()["paths"]) | direct)


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return version


# --- PromQL

_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset"}
)


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression (or a Grafana `label_values(metric, label)` query) reads."""
    if match := re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,.*\)\s*", expr):
        return {match.group(1)}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings, e.g. "$route" or "5.."
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # label matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:e[-+]?\d+)?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        is_call = text[match.end() :].lstrip().startswith("(")
        if not is_call and match.group() not in _PROMQL_KEYWORDS:
            names.add(match.group())
    return names
