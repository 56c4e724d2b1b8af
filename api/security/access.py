"""What each operation asks of its caller: the scopes API keys carry, and the access levels.

Every HTTP operation declares exactly one access level (the app refuses to start otherwise):

- `public`: anyone (sign-up, sign-in, health);
- a scope: a signed-in session, or an API key holding that scope (or one that implies it);
- `session`: a signed-in session only; API keys are refused with 401 `session_required`.
  Acts that change who can get in, or that hand over everything at once, are session only:
  creating or revoking keys, ending sessions, storing or deleting secrets, the data export,
  erasure, changing the password;
- `admin`: an administrator's signed-in session.

Access tokens act for the person who signed in, so they carry every scope; keys carry the scopes
they were created with. `write:x` implies `read:x`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

SCOPES: dict[str, str] = {
    "read:market": "quotes, history, market overview and technical analysis",
    "read:predictions": "forecasts, their history and the models behind them",
    "read:portfolio": "your portfolios, transactions, positions, analytics and watchlists",
    "write:portfolio": "record transactions and change portfolios and watchlists "
    "(includes read:portfolio)",
    "read:account": "your profile, settings, consents and which secrets are stored",
    "write:account": "change your profile, settings and consents; e-mail verification "
    "(includes read:account)",
    "alerts": "your alerts (forecast alerts also need read:predictions)",
    "notifications": "your notifications, over HTTP and /ws/notifications",
    "chat": "AI chat; its tools reach only what the key's other scopes allow",
}
IMPLIES: dict[str, frozenset[str]] = {
    "write:portfolio": frozenset({"read:portfolio"}),
    "write:account": frozenset({"read:account"}),
}

Level = Literal["public", "scope", "session", "admin"]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def granted_by(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a key holding `scopes` may use, implied ones included."""
    held = set(scopes)
    for scope in list(held):
        held |= IMPLIES.get(scope, frozenset())
    return frozenset(held)


@dataclass(frozen=True)
class Access:
    """One operation's requirement. `write` (when set) is the scope unsafe methods need instead
    of `scope`, for routers whose reads and writes share one declaration."""

    level: Level
    scope: str | None = None
    write: str | None = None

    def __post_init__(self) -> None:
        for scope in (self.scope, self.write):
            if scope is not None and scope not in SCOPES:
                raise ValueError(f"unknown scope {scope!r}")
        if (self.level == "scope") != (self.scope is not None):
            raise ValueError("a scope requirement names its scope; other levels name none")

    def scope_for(self, method: str) -> str | None:
        if self.write is not None and method.upper() not in SAFE_METHODS:
            return self.write
        return self.scope

    def describe(self, method: str) -> str:
        """What the OpenAPI document says the operation needs (`x-access`)."""
        if self.level == "scope":
            return f"scope:{self.scope_for(method)}"
        return self.level


PUBLIC = Access("public")
SESSION = Access("session")
ADMIN = Access("admin")


def scoped(scope: str, write: str | None = None) -> Access:
    return Access("scope", scope, write)
