"""The layers of DESIGN.md, as import-linter contracts (`[tool.importlinter]` in pyproject.toml):
contracts at the bottom, features, training, then serving; api never imports serving, training
or pipelines; inside api, routers above services above repositories (api.db, the only SQL);
only the CLI imports pipelines; no import cycles inside any package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_layer_contract_is_kept() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and " kept" in done.stdout
