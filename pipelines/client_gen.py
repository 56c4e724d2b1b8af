"""Generates the TypeScript client's types (`clients/typescript/src/*.d.ts`) from the API itself:
`openapi.d.ts` from the app's OpenAPI document, `asyncapi.d.ts` from the WebSocket message
schemas in `docs/asyncapi.yaml`. Both go through the locked `openapi-typescript`, so the output
is the same bytes on every machine; tests/clients/test_typescript.py fails when the committed
files drift. Regenerate after changing a route, a schema or the AsyncAPI document:

    make client        # or: uv run python -m pipelines.client_gen
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CLIENT_DIR = ROOT / "clients" / "typescript"
ASYNCAPI_FILE = ROOT / "docs" / "asyncapi.yaml"
# Schemas are read as written: a field with a default stays optional (the server fills it in),
# a response field is required only where the schema says so, and an object schema without
# properties is any object (`Record<string, unknown>`), not an empty one.
GENERATOR_FLAGS = ("--default-non-nullable=false", "--empty-objects-unknown")
NPM_TIMEOUT_S = 600
GENERATOR_TIMEOUT_S = 300


class DefaultSettings(Settings):
    """The defaults alone: neither the environment nor a `.env` file may change the document."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document. Building the app opens no database or Redis connection (that
    happens at startup); its key file goes to a scratch folder, which is discarded."""
    from api.app import create_app

    with tempfile.TemporaryDirectory(prefix="client-gen-") as tmp:
        settings = DefaultSettings(data_dir=Path(tmp), log_level="WARNING")
        return create_app(settings).openapi()


def asyncapi_document(path: Path = ASYNCAPI_FILE) -> dict[str, Any]:
    """A minimal OpenAPI 3.1 document whose `components.schemas` are the AsyncAPI document's
    schemas and message payloads (under the message names), plus one union per channel and
    direction (`PredictionsServerMessage`, `PredictionsClientMessage`, ...) taken from its
    operations, so a client can narrow what a socket sends on `type`."""
    spec = yaml.safe_load(path.read_text())
    components = spec.get("components", {})
    schemas: dict[str, Any] = dict(components.get("schemas", {}))
    for name, message in components.get("messages", {}).items():
        if name in schemas:
            raise ValueError(f"{path}: message {name!r} clashes with a schema of that name")
        schemas[name] = message["payload"]
    for name, union in _channel_unions(spec).items():
        if name in schemas:
            raise ValueError(f"{path}: {name!r} clashes with a schema or message of that name")
        schemas[name] = union
    info = spec["info"]
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{info['title']} (WebSocket messages)", "version": info["version"]},
        "paths": {},
        "components": {"schemas": schemas},
    }


def _channel_unions(spec: dict[str, Any]) -> dict[str, Any]:
    """`{Channel}ServerMessage` / `{Channel}ClientMessage` per operation. AsyncAPI speaks for the
    application: `send` is what the server sends, `receive` what it accepts from clients."""
    channels = spec.get("channels", {})
    unions: dict[str, Any] = {}
    for operation in spec.get("operations", {}).values():
        channel_name = _ref_tail(operation["channel"]["$ref"], "#/channels/")
        channel = channels[channel_name]
        side = "Server" if operation["action"] == "send" else "Client"
        refs = []
        for ref in operation["messages"]:
            key = ref["$ref"].rsplit("/", 1)[-1]
            message = _ref_tail(channel["messages"][key]["$ref"], "#/components/messages/")
            refs.append({"$ref": f"#/components/schemas/{message}"})
        unions[f"{channel_name[:1].upper()}{channel_name[1:]}{side}Message"] = {
            "description": f"What the {side.lower()} sends on {channel['address']}.",
            "oneOf": refs,
        }
    return unions


def _ref_tail(ref: str, prefix: str) -> str:
    if not ref.startswith(prefix):
        raise ValueError(f"expected a reference under {prefix}, found {ref!r}")
    return ref.removeprefix(prefix)


def ensure_node_modules(client_dir: Path = CLIENT_DIR) -> None:
    """`npm ci` when `node_modules` is absent or differs from the lock file, so the generator
    and the compiler are always the locked versions."""
    if _installed(client_dir) == _locked(client_dir / "package-lock.json"):
        return
    _run([_program("npm"), "ci", "--no-audit", "--no-fund"], client_dir, NPM_TIMEOUT_S)


def _locked(lock_file: Path) -> dict[str, str | None]:
    """Each locked package's version, by its path under node_modules."""
    if not lock_file.exists():
        return {}
    packages = json.loads(lock_file.read_text()).get("packages", {})
    return {path: spec.get("version") for path, spec in packages.items() if path}


def _installed(client_dir: Path) -> dict[str, str | None] | None:
    """What npm last installed (its hidden lock file), or None when nothing is."""
    hidden = client_dir / "node_modules" / ".package-lock.json"
    return _locked(hidden) if hidden.exists() else None


def _program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Node.js 20+ (with npm) to build the client")
    return path


def generate(out_dir: Path, client_dir: Path = CLIENT_DIR) -> list[Path]:
    """Write `openapi.d.ts` and `asyncapi.d.ts` into `out_dir`; the files written."""
    ensure_node_modules(client_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = {"openapi": openapi_document(), "asyncapi": asyncapi_document()}
    written = []
    with tempfile.TemporaryDirectory(prefix="client-gen-") as tmp:
        for name, document in documents.items():
            source = Path(tmp) / f"{name}.json"
            source.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
            target = out_dir.resolve() / f"{name}.d.ts"
            _run_generator(client_dir, source, target)
            written.append(target)
    return written


def _run_generator(client_dir: Path, source: Path, target: Path) -> None:
    """The locked openapi-typescript (`--no-install`: never a version fetched on the fly)."""
    generator = [_program("npx"), "--no-install", "openapi-typescript"]
    command = [*generator, str(source), "-o", str(target), *GENERATOR_FLAGS]
    _run(command, client_dir, GENERATOR_TIMEOUT_S)


def _run(command: list[str], cwd: Path, timeout_s: float) -> None:
    done = subprocess.run(  # noqa: S603 - our own argv, no shell
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        shown = " ".join([Path(command[0]).name, *command[1:]])
        raise RuntimeError(f"`{shown}` failed in {cwd}:\n{done.stdout}\n{done.stderr}")


def main() -> None:
    for path in generate(CLIENT_DIR / "src"):
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
