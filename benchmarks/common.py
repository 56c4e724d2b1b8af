"""Small pieces both benchmarks use."""

from __future__ import annotations

import math
import socket


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank `q` quantile of sorted, non-empty values."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
