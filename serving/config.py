"""Typed configuration of the Serve application: one place for replicas, CPUs and the store URLs.

Sizing for the 2-core, 24 GiB development machine: every network replica imports torch
(~0.7 GiB RSS), so each network family scales 1 → 3 replicas; the classical family (numpy only,
microseconds a ticker), the ensemble and the ingress 1 → 2. There is no router deployment: the
ingress calls the family deployments directly (serving.router). CPU shares are scheduling
weights, sized so that even every deployment at its maximum fits two cores
(3×3×0.15 + 2×0.05 + 2×0.1 + 2×0.1 = 1.85): a replica that cannot be placed would sit
pending, and the single-threaded forward pass of these small networks takes milliseconds, so
the shares rarely bind. `max_ongoing_requests` bounds the queue inside one replica (back-pressure
goes to the ingress's handles instead), and `target_ongoing_requests=2` makes the autoscaler add
a model replica as soon as two requests wait on average.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.settings import Settings
from contracts import FAMILY_KINDS


class Scaling(BaseModel):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    max_ongoing_requests: int = Field(default=8, ge=1)
    num_cpus: float = Field(default=0.15, gt=0)
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 20.0

    def deployment_options(self) -> dict:
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "initial_replicas": max(1, self.min_replicas),
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
            },
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus},
        }


class ServeAppConfig(BaseModel):
    """Everything `build_app` needs; serialisable, so `serve deploy` YAML can carry it."""

    settings: Settings
    model: Scaling = Field(default_factory=lambda: Scaling(max_replicas=3))
    classical: Scaling = Field(default_factory=lambda: Scaling(num_cpus=0.05))
    ensemble: Scaling = Field(default_factory=lambda: Scaling(num_cpus=0.1))
    ingress: Scaling = Field(
        default_factory=lambda: Scaling(
            num_cpus=0.1, max_ongoing_requests=64, target_ongoing_requests=16
        )
    )
    overrides: dict[str, Scaling] = Field(
        default_factory=dict, description="per-family scaling (garch, lstm, transformer, hybrid)"
    )

    def family(self, name: str) -> Scaling:
        kind = FAMILY_KINDS[name]
        default = {"classical": self.classical, "network": self.model, "ensemble": self.ensemble}
        return self.overrides.get(name, default[kind])
