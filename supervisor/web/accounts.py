"""Who may use the dashboard: a users file of ``name:role:hash`` lines, scrypt-hashed.

Secrets never live in config.toml: ``[dashboard] users_file`` (or
``JOBVISOR_DASHBOARD_USERS_FILE``) names a file an operator writes with the lines
``jobvisor dashboard passwd NAME --role ROLE`` prints. The same secret signs a person in
through the login form and a script in through ``Authorization: Bearer NAME:SECRET``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from enum import StrEnum
from pathlib import Path

import msgspec

from jobs.errors import ConfigurationError

# scrypt at n=2**14, r=8: about 16 MiB and tens of milliseconds a check; verified
# secrets are remembered by their SHA-256 so an API client's every request stays cheap.
_N, _R, _P = 2**14, 8, 1


class Role(StrEnum):
    VIEWER = "viewer"  # reads everything a page shows
    ADMIN = "admin"  # also acts: requeue, cancel, delete, pause, clear, scale, reload


class User(msgspec.Struct, frozen=True):
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(("scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)))


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _verify(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


class Accounts:
    """The users file, read at start; ``check`` answers who a name and secret are."""

    def __init__(self, hashes: dict[str, tuple[Role, str]]) -> None:
        self._hashes = hashes
        self._known: dict[tuple[str, bytes], User] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str) -> Accounts:
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"dashboard.users_file {path!r} cannot be read ({exc.strerror}): write it "
                "with the lines `jobvisor dashboard passwd NAME --role ROLE` prints") from None
        hashes: dict[str, tuple[Role, str]] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, rest = line.partition(":")
            role, _, stored = rest.partition(":")
            if not name or role not in tuple(Role) or not stored.startswith("scrypt$"):
                raise ConfigurationError(
                    f"{path} line {number}: expected name:role:hash with role viewer or "
                    "admin and a hash from `jobvisor dashboard passwd`")
            if name in hashes:
                raise ConfigurationError(f"{path} line {number}: user {name!r} is listed twice")
            hashes[name] = (Role(role), stored)
        if not hashes:
            raise ConfigurationError(f"dashboard.users_file {path!r} lists no users")
        return cls(hashes)

    def check(self, name: str, secret: str) -> User | None:
        found = self._hashes.get(name)
        if found is None:
            return None
        role, stored = found
        seen = (name, hashlib.sha256(secret.encode()).digest())
        with self._lock:
            user = self._known.get(seen)
        if user is not None:
            return user
        if not _verify(secret, stored):
            return None
        user = User(name, role)
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[seen] = user
        return user

    def user(self, name: str) -> User | None:
        """The user a session names, or None when the name is not in the file."""
        found = self._hashes.get(name)
        return User(name, found[0]) if found else None
