"""The run's settings and the parties (identities) the kit acts as."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("source", "recipient", "platform", "other")
ROLE_HELP = {
    "source": "the referral source (requester): creates patients, referrals and Tasks",
    "recipient": "the referral recipient (Task owner): accepts, starts and completes",
    "platform": "the coordination platform organization (coordination-platform actor)",
    "other": "a third organization that is neither requester nor owner",
}


@dataclass(frozen=True)
class Party:
    """One identity: a Backend Services client bound to an Organization (auth backend), or
    just an Organization reference (auth none; the kit creates it when empty)."""

    role: str
    organization: str = ""  # "Organization/x"; empty: the kit creates one (auth none)
    client_id: str = ""
    key_file: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> Party:
        """`ROLE=CLIENT_ID,KEY_FILE,Organization/x` or `ROLE=Organization/x` (auth none)."""
        if "=" not in spec:
            raise ValueError(f"--party {spec!r}: expected ROLE=CLIENT_ID,KEY_FILE,ORGANIZATION")
        role, rest = spec.split("=", 1)
        if role not in ROLES:
            raise ValueError(f"--party {spec!r}: role must be one of {', '.join(ROLES)}")
        parts = [p.strip() for p in rest.split(",")]
        if len(parts) == 1:
            return cls(role, organization=parts[0])
        if len(parts) != 3:
            raise ValueError(f"--party {spec!r}: expected ROLE=CLIENT_ID,KEY_FILE,ORGANIZATION")
        return cls(role, organization=parts[2], client_id=parts[0], key_file=Path(parts[1]))


@dataclass
class RunConfig:
    base: str
    actor: str
    auth: str = "none"  # none | backend
    token_url: str = ""  # empty: discovered from .well-known/smart-configuration
    scope: str = "system/*.cruds"
    parties: dict[str, Party] = field(default_factory=dict)
    tests: tuple[str, ...] = ()  # fnmatch patterns; empty = all
    report_dir: Path | None = None
    keep: bool = False
    timeout: float = 30.0  # per HTTP request
    wait: float = 20.0  # for notifications and asynchronous platform work
    listen: str = "127.0.0.1:0"  # the kit's notification receiver
    callback_url: str = ""  # how the server reaches the receiver (default: its listen URL)
    quiet: bool = False

    def selected(self, test_id: str) -> bool:
        return not self.tests or any(fnmatch.fnmatchcase(test_id, p) for p in self.tests)

    def distinct(self, *roles: str) -> bool:
        """Do these roles act as different organizations the server can tell apart?"""
        if self.auth == "none":
            return False
        ids = [self.parties[r].client_id for r in roles if r in self.parties]
        orgs = [self.parties[r].organization for r in roles if r in self.parties]
        return len(ids) == len(roles) and len(set(ids)) == len(ids) and len(set(orgs)) == len(orgs)
