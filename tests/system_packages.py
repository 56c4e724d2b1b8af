"""Debian programs some tests drive (Prometheus, Chromium): installed by the test setup when
missing and apt is there, otherwise the test is skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

APT_TIMEOUT_S = 900
_lock = threading.Lock()


def require_programs(programs: dict[str, str]) -> dict[str, str]:
    """Each program's path, `{program: debian package}`, installing the missing packages with
    apt-get (as root). Skips the calling test, saying why, where that is not possible."""
    with _lock:
        missing = {name: package for name, package in programs.items() if not shutil.which(name)}
        if missing:
            _apt_install(sorted(set(missing.values())))
        found = {name: shutil.which(name) for name in programs}
    absent = [name for name, path in found.items() if path is None]
    if absent:
        pytest.skip(f"{', '.join(absent)} still not found after installing {programs}")
    return {name: path for name, path in found.items() if path is not None}


def _apt_install(packages: list[str]) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip(f"needs the Debian packages {packages}, and this machine has no apt-get")
    if os.geteuid() != 0:
        pytest.skip(f"needs the Debian packages {packages}; installing them needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", *packages]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    if done.returncode != 0:  # stale or absent package lists: refresh them once and retry
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, timeout=APT_TIMEOUT_S)
        done = subprocess.run(
            install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
        )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        pytest.skip(f"apt-get could not install {packages}: {' / '.join(tail)}")
