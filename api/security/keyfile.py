"""The product's own secrets, generated on first start and kept in the data folder.

No signing or encryption key is a constant of the source. When `JWT_SECRET`, `ENCRYPTION_KEYS`
(with `ENCRYPTION_ACTIVE_KEY`), `BLIND_INDEX_KEY` or `METRICS_TOKEN` are unset, outside
production, they come from `<data dir>/secrets.json`: written once, with 256-bit values from
`secrets`, readable by its owner only (0600), and read again by every later start, so tokens and
ciphertexts survive restarts while two data folders never share a key. Each environment variable
still overrides its entry. Production never generates: missing or weak keys refuse to start
(`Settings` and `Keyring.from_settings`).

The file appears atomically (written aside, then hard-linked into place), so concurrent first
starts agree on one set of keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from api.security.crypto import generate_key
from api.settings import Environment, Settings

FILE_NAME = "secrets.json"


class KeyFileError(RuntimeError):
    """The key file is unreadable, malformed, or readable by others."""


def fresh_secrets() -> dict[str, Any]:
    """A new, random set of the product's keys (what a first start writes)."""
    key_id = datetime.now(UTC).strftime("k%Y%m%d")
    return {
        "jwt_secret": secrets.token_urlsafe(48),
        "encryption_keys": {key_id: generate_key()},
        "encryption_active_key": key_id,
        "blind_index_key": generate_key(),
        "metrics_token": secrets.token_urlsafe(32),
    }


def key_file(settings: Settings) -> Path:
    return settings.resolved_data_dir / FILE_NAME


def load_or_create(path: Path) -> dict[str, Any]:
    """The stored keys, writing a fresh set first if there is none."""
    if not path.exists():
        _create(path, fresh_secrets())
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path} cannot be read as JSON: {type(exc).__name__}") from exc
    if not isinstance(stored, dict):
        raise KeyFileError(f"{path} must hold a JSON object")
    missing = {k: v for k, v in fresh_secrets().items() if k not in stored}
    if missing:  # a file from an older release: add the newer keys, keep the rest
        _replace(path, {**stored, **missing})
        stored = {**stored, **missing}
    return stored


def _create(path: Path, values: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = _write_aside(path, values)
    try:
        os.link(aside, path)  # atomic, and refuses to replace a file another start just wrote
    except FileExistsError:
        pass
    finally:
        aside.unlink(missing_ok=True)


def _replace(path: Path, values: dict[str, Any]) -> None:
    aside = _write_aside(path, values)
    os.replace(aside, path)


def _write_aside(path: Path, values: dict[str, Any]) -> Path:
    aside = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(values, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            aside.unlink()
        raise
    return aside


def with_secrets(settings: Settings) -> Settings:
    """`settings` with every unset key taken from the data folder's key file (created on first
    use). Production settings are returned as they are: there, keys come from the environment."""
    if settings.environment == Environment.PRODUCTION:
        return settings
    wanted = {
        "jwt_secret": settings.jwt_secret is None,
        "encryption_keys": settings.encryption_keys is None,
        "blind_index_key": settings.blind_index_key is None,
        "metrics_token": settings.metrics_token is None,
    }
    if not any(wanted.values()):
        return settings
    stored = load_or_create(key_file(settings))
    update: dict[str, Any] = {}
    if wanted["jwt_secret"]:
        update["jwt_secret"] = SecretStr(stored["jwt_secret"])
    if wanted["encryption_keys"]:
        update["encryption_keys"] = SecretStr(json.dumps(stored["encryption_keys"]))
        update["encryption_active_key"] = stored["encryption_active_key"]
    if wanted["blind_index_key"]:
        update["blind_index_key"] = SecretStr(stored["blind_index_key"])
    if wanted["metrics_token"]:
        update["metrics_token"] = SecretStr(stored["metrics_token"])
    return settings.model_copy(update=update)
