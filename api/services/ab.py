"""Sticky A/B assignment: the same user always gets the same variant while weights are unchanged."""

from __future__ import annotations

import hashlib

from contracts import CHALLENGER, CHAMPION

__all__ = ["CHALLENGER", "CHAMPION", "assign", "bucket"]


def bucket(user_key: str, family: str) -> float:
    """A uniform number in [0, 1) fixed by (user, family): independent across families."""
    digest = hashlib.sha256(f"{family}:{user_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(user_key: str, family: str, challenger_weight: float, has_challenger: bool) -> str:
    """champion or challenger for this user; users below the weight see the challenger."""
    if not has_challenger or challenger_weight <= 0:
        return CHAMPION
    return CHALLENGER if bucket(user_key, family) < challenger_weight else CHAMPION
