"""The whole Serve graph in one typed builder: the ingress calls every family deployment directly.

```
StockCopilotIngress (FastAPI from api.create_app; routing and A/B choice, serving.router)
  ├─ GarchForecaster ─────┐
  ├─ LstmForecaster ──────┤
  ├─ TransformerForecaster ┤◄── EnsembleForecaster (members through handles)
  ├─ HybridForecaster ────┘
  └─ EnsembleForecaster
```

The deployments come from `contracts.FAMILY_KINDS` (serving.replicas): a new family needs no
change here.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Sequence
from typing import Any

from ray.serve import Application

from contracts import FAMILIES, FAMILY_KINDS, MEMBERS
from serving.config import ServeAppConfig
from serving.ingress import StockCopilotIngress
from serving.replicas import DEPLOYMENTS
from training.local_ray import init_local_ray

# Ray Serve's fast path, set for every process of the cluster (the controller reads them too):
# HAProxy as the HTTP ingress on each node, forwarding straight to the ingress replicas (which
# serve HTTP themselves), and the throughput-optimised profile: gRPC between replicas, user code
# and the handle router on each replica's own event loop. Safe here because every blocking call
# in our deployments (model forward, registry, file I/O) already runs in a worker thread.
SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
}
# A stopping ingress replica keeps answering this long, so HAProxy can take it out of its
# backends first. Ray's 30 s allows for a multi-node cluster (the KubeRay manifests keep it);
# on one local node HAProxy reloads in well under a second, and 30 s made every Ctrl-C of
# `make up` wait half a minute.
LOCAL_SERVE_ENV = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "3"}


def haproxy_ports() -> dict[str, str]:
    """Free ports for this cluster's HAProxy stats page and metrics exporter (by default 8404
    and 9101 on every cluster), so several clusters on one machine — tests, a benchmark beside
    `make up` — never collide. Its files already live in a folder per Ray node."""
    return {
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
    }


# Below the kernel's ephemeral range (32768+, where any outgoing connection may hold the port by
# the time HAProxy binds it) and outside Ray's own: workers 10002-19999, replicas' HTTP 30000+.
HAPROXY_PORTS = range(20_000, 30_000)


def _free_port() -> int:
    """A port in HAPROXY_PORTS that nothing listens on now."""
    for port in random.sample(HAPROXY_PORTS, 200):
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))  # noqa: S104 - a probe: HAProxy binds every interface
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port for HAProxy in {HAPROXY_PORTS}")


def start_local_ray(
    trusted_proxies: Sequence[str] = (), metrics_export_s: float = 5.0, **options: Any
) -> Any:
    """`init_local_ray` with SERVE_ENV (and HAProxy ports of its own) in every process of the
    cluster, and the ingress replicas believing X-Forwarded-For only from `trusted_proxies`
    (uvicorn's FORWARDED_ALLOW_IPS, which otherwise trusts loopback: any local client could pick
    its own rate-limit address). Every process hands its metrics (the API's too, serving.metrics)
    to its node's metrics agent each `metrics_export_s` (Ray's default, 10 s, would leave the
    agent up to two 15 s scrapes behind; Ray never goes below 1 s)."""
    for name, value in {**SERVE_ENV, **LOCAL_SERVE_ENV}.items():
        os.environ.setdefault(name, value)  # the cluster inherits the driver's environment
    os.environ.update(haproxy_ports())  # fresh for each cluster
    os.environ["RAY_metrics_report_interval_ms"] = str(round(metrics_export_s * 1000))  # noqa: SIM112 - Ray reads this exact name
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(trusted_proxies)  # empty: trust no one
    return init_local_ray(**options)


def build_app(config: ServeAppConfig) -> Application:
    settings = config.settings
    members = {
        family: DEPLOYMENTS[family]
        .options(**config.family(family).deployment_options())
        .bind(settings)
        for family in MEMBERS
    }
    ensembles = {
        family: DEPLOYMENTS[family]
        .options(**config.family(family).deployment_options())
        .bind(settings, members)
        for family in FAMILIES
        if FAMILY_KINDS[family] == "ensemble"
    }
    return StockCopilotIngress.options(**config.ingress.deployment_options()).bind(
        settings, {**members, **ensembles}
    )


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for `serve deploy` / `serve run` (`import_path: serving.app:app_builder`).

    `args` holds a ServeAppConfig; `settings` may be omitted to read them from the environment.
    """
    from api.settings import Settings

    raw = dict(args)
    raw.setdefault("settings", Settings().model_dump())
    return build_app(ServeAppConfig.model_validate(raw))
