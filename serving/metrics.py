"""The API's per-replica metrics on Ray's metrics export, for the ingress replicas.

`api.metrics` defines every metric once; this backend builds its per-replica ones as
`ray.serve.metrics` instruments, which Ray tags with `deployment`, `replica` and `application`
and every node's metrics agent exports (as `ray_<name>`; Prometheus strips the prefix, see
deploy/prometheus/prometheus.yml). So the counts of all ingress replicas, on every node of a
KubeRay cluster, add up in Prometheus, where a scrape of the app's `/metrics` through the Serve
proxy would see one replica at a time.
"""

from __future__ import annotations

import threading
from typing import Self

from ray.serve import metrics as serve_metrics

from api.metrics import MetricSpec


class _Tagged[M]:
    """A Ray metric with prometheus_client's `labels(...)` shape: label values become tags."""

    def __init__(self, metric: M, keys: tuple[str, ...], values: tuple[str, ...] = ()) -> None:
        self._metric = metric
        self._keys = keys
        self._tags = dict(zip(keys, values, strict=True)) if values else {}

    def labels(self, *values: str) -> Self:
        return type(self)(self._metric, self._keys, values)


class RayCounter(_Tagged[serve_metrics.Counter]):
    """A `ray.serve.metrics.Counter` with prometheus_client's `labels(...).inc()` shape."""

    def inc(self, amount: float = 1) -> None:
        if amount > 0:  # Ray refuses 0; adding nothing changes nothing
            self._metric.inc(amount, tags=self._tags)


class RayGauge:
    """A `ray.serve.metrics.Gauge` that also counts up and down (Ray's only sets): the value of
    each label set is kept here, in this replica."""

    def __init__(
        self,
        metric: serve_metrics.Gauge,
        keys: tuple[str, ...],
        values: tuple[str, ...] = (),
        state: dict[tuple[str, ...], float] | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        self._metric = metric
        self._keys = keys
        self._values = values
        self._state = {} if state is None else state
        self._lock = lock or threading.Lock()

    def labels(self, *values: str) -> Self:
        return type(self)(self._metric, self._keys, values, self._state, self._lock)

    def set(self, value: float) -> None:
        with self._lock:
            self._state[self._values] = value
            self._metric.set(value, tags=dict(zip(self._keys, self._values, strict=True)))

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            value = self._state.get(self._values, 0.0) + amount
        self.set(value)

    def dec(self, amount: float = 1) -> None:
        self.inc(-amount)


class RayHistogram(_Tagged[serve_metrics.Histogram]):
    """A `ray.serve.metrics.Histogram` with prometheus_client's `labels(...).observe()` shape."""

    def observe(self, amount: float) -> None:
        self._metric.observe(amount, tags=self._tags)


class RayMetricsBackend:
    """`api.metrics.MetricsBackend` on Ray's metrics: build it inside a Serve replica, where
    the replica context supplies the deployment and replica tags."""

    def counter(self, spec: MetricSpec) -> RayCounter:
        metric = serve_metrics.Counter(spec.name, description=spec.help, tag_keys=spec.labels)
        return RayCounter(metric, spec.labels)

    def gauge(self, spec: MetricSpec) -> RayGauge:
        metric = serve_metrics.Gauge(spec.name, description=spec.help, tag_keys=spec.labels)
        return RayGauge(metric, spec.labels)

    def histogram(self, spec: MetricSpec) -> RayHistogram:
        metric = serve_metrics.Histogram(
            spec.name,
            description=spec.help,
            boundaries=list(spec.buckets),
            tag_keys=spec.labels,
        )
        return RayHistogram(metric, spec.labels)
