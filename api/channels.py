"""Redis pub/sub channels: the market feed and other writers publish, every ingress replica's
WebSocket hub listens (so the sockets of all replicas get every message)."""

from __future__ import annotations

import uuid

QUOTES = "quotes"  # one `quote` message per ticker and day
DAYS = "feed:days"  # one `day` message after each trading day's bars are processed
MODELS = "notifications:models"  # model alias moves and automatic rollbacks, for everyone
USER_PREFIX = "notifications:user:"  # + user id: that user's alerts and portfolio events
FEED_CLOCK = "feed:clock"  # key: the last day the feed processed
FEED_PROCESSED_AT = "feed:processed_at"  # key: when it did (Unix seconds), for the lag metric


def user_channel(user_id: uuid.UUID) -> str:
    return f"{USER_PREFIX}{user_id}"
