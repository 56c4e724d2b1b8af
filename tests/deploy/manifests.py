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


def resolved_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment with defaults resolved (unset variables left out)."""
    env = {k: interpolate(v) for k, v in environment(service).items()}
    return {k: v for k, v in env.items() if v is not None}


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


def compose_command(service: dict[str, Any]) -> list[str]:
    """A compose service's command with `${VAR:-default}` resolved to the defaults."""
    argv = [interpolate(arg) for arg in exec_form(service["command"])]
    assert None not in argv, service["command"]
    return [arg for arg in argv if arg is not None]


# --- the CLI


def _subcommand(root: Any, argv: list[str]) -> tuple[Any, list[str], list[str]]:
    """The (click) command argv names under `root`, its path, and the arguments left for it."""
    command, path, args = root, [argv[0]], list(argv[1:])
    while hasattr(command, "commands"):
        assert args, f"`{' '.join(path)}` needs a subcommand"
        name = args.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`{' '.join(path)}` has no command {name!r}"
        command, path = sub, [*path, name]
    return command, path, args


def check_cli(argv: list[str]) -> None:
    """Fail unless argv is a `stockcopilot` command line the typer app accepts."""
    from pipelines.cli import app

    assert argv[0] == "stockcopilot", argv
    # typer ships its own click: duck-type groups
    command, path, args = _subcommand(typer.main.get_command(app), argv)
    try:
        command.make_context(" ".join(path), args)  # parses and validates; runs nothing
    except Exception as exc:  # click's UsageError family: unknown option, bad value, ...
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        raise AssertionError(f"`{' '.join(argv)}`: {message}") from exc


def mlflow_command(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The parameters an `mlflow ...` command line runs with, as MLflow's own CLI parses them
    (running nothing); an option missing from argv is taken from `env` where MLflow reads it
    from a variable (e.g. `mlflow server --backend-store-uri` from MLFLOW_BACKEND_STORE_URI).
    Fails on a command or option MLflow does not have."""
    from mlflow.cli import cli

    assert argv[0] == "mlflow", argv
    command, path, args = _subcommand(cli, argv)
    given = set(args)
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        if not isinstance(envvar, str) or envvar not in (env or {}) or given & set(param.opts):
            continue
        value = (env or {})[envvar]
        if getattr(param, "is_flag", False):
            args += [param.opts[0]] if value.lower() in ("1", "true", "yes") else []
        else:
            args += [param.opts[0], value]
    try:
        return dict(command.make_context(" ".join(path), args).params)
    except Exception as exc:  # click's UsageError family
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        raise AssertionError(f"`{' '.join(argv)}`: {message}") from exc


def readme_secrets(text: str) -> dict[str, dict[str, str]]:
    """Secret name -> its literals, from the `kubectl create secret generic` commands of a
    README (values as written there: examples, or shell substitutions)."""
    found = {}
    pattern = r"kubectl create secret generic ((?:[^\n]*\\\n)*[^\n]*)"
    for command in re.findall(pattern, text):
        name, *options = shlex.split(command.replace("\\\n", " "), comments=True)
        literals = [o.removeprefix("--from-literal=") for o in options if "--from-literal=" in o]
        found[name] = dict(literal.split("=", 1) for literal in literals)
    return found


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A Kubernetes container's literal `env` entries (not those from a Secret or ConfigMap)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


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
