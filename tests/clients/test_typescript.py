"""The TypeScript client (clients/typescript): its committed types are what the API and
docs/asyncapi.yaml generate now, and the client and its example type-check against them."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.client_gen import CLIENT_DIR, ensure_node_modules, generate

GENERATED = ("openapi.d.ts", "asyncapi.d.ts")
TSC_TIMEOUT_S = 240
DIFF_LINES = 40


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The locked packages, installed with `npm ci` when absent (a clean clone, CI)."""
    missing = [program for program in ("node", "npm", "npx") if shutil.which(program) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: the TypeScript client needs Node.js 20+")
    ensure_node_modules(CLIENT_DIR)
    return CLIENT_DIR / "node_modules"


def _diff(committed: Path, fresh: Path) -> str:
    old = committed.read_text().splitlines() if committed.exists() else []
    lines = difflib.unified_diff(
        old, fresh.read_text().splitlines(), str(committed), "generated now", lineterm=""
    )
    return "\n".join(list(lines)[:DIFF_LINES])


def test_the_committed_types_are_what_the_api_and_the_asyncapi_document_generate(
    node_modules: Path, tmp_path: Path
) -> None:
    generate(tmp_path)
    committed = CLIENT_DIR / "src"
    stale = [
        name
        for name in GENERATED
        if not (committed / name).exists()
        or (committed / name).read_bytes() != (tmp_path / name).read_bytes()
    ]
    diffs = "\n".join(_diff(committed / name, tmp_path / name) for name in stale)
    assert not stale, (
        f"clients/typescript/src/{', '.join(stale)} no longer match the API: "
        f"run `make client` and commit the result\n{diffs}"
    )


def test_the_client_and_its_example_type_check(node_modules: Path) -> None:
    npx = shutil.which("npx")
    assert npx is not None
    done = subprocess.run(
        [npx, "--no-install", "tsc", "--noEmit", "-p", "."],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=TSC_TIMEOUT_S,
    )
    assert done.returncode == 0, f"tsc found errors:\n{done.stdout}{done.stderr}"
