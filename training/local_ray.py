"""A Ray cluster of our own on this machine, whose workers run in this very environment."""

from __future__ import annotations

import os
from typing import Any


def init_local_ray(**options: Any) -> Any:
    """`ray.init` on a new local cluster (never one that happens to be running); returns its
    context.

    Started under `uv run` (as `make up` and `make test` do), Ray would by default mirror the
    driver's environment to its workers by packaging the working directory and having each
    worker `uv run` in that copy: a second multi-gigabyte virtual environment per cluster, and
    a copy without the git-ignored files (the MLflow registry under mlruns/ among them). Every
    worker here runs on this machine, in the same installed environment, so that hook is off.
    """
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"  # for a ray imported from now on
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray._private import ray_constants

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False  # read when ray was first imported
    return ray.init(address="local", **options)
