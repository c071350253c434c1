"""Encryption keys: where they come from, their ids, and which one is active.

A key is 32 random bytes (AES-256), written as base64, optionally after an id:
``k2:BASE64`` or ``BASE64`` (its id is then the first 8 hex digits of its SHA-256).
``JOBVISOR_ENCRYPTION_KEYS`` lists keys separated by commas, a key file one per line
(``#`` starts a comment); either way newest first. The first key encrypts; every key
decrypts what was encrypted with it, so a key stays listed until ``jobvisor encryption
rotate`` has moved everything stored to a newer one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
from typing import TYPE_CHECKING

from jobs.errors import ConfigurationError
from jobs.settings import EncryptionSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEYS_VARIABLE = "JOBVISOR_ENCRYPTION_KEYS"
KEY_BYTES = 32
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")
_MAKE_ONE = "make one with `jobvisor encryption keygen`"


def aesgcm(secret: bytes) -> AESGCM:
    """The cipher of one key; the package is imported here, on first use."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise ConfigurationError(
            "payload encryption needs the cryptography package, which is not installed in "
            "this environment: pip install 'jobvisor[encryption]'") from None
    return AESGCM(secret)


class Key:
    """One key: its id, its secret, and its cipher once built. Its repr shows the id only."""

    __slots__ = ("_cipher", "id", "secret")

    def __init__(self, key_id: str, secret: bytes) -> None:
        self.id = key_id
        self.secret = secret
        self._cipher: AESGCM | None = None

    @property
    def cipher(self) -> AESGCM:
        if self._cipher is None:
            self._cipher = aesgcm(self.secret)
        return self._cipher

    def __repr__(self) -> str:
        return f"<Key {self.id}>"


def fingerprint(secret: bytes) -> str:
    """The id of a key given without one: it names the key without revealing it."""
    return hashlib.sha256(secret).hexdigest()[:8]


def parse_key(entry: str, where: str) -> Key:
    """One ``[id:]base64`` entry; errors say where it was and never show the key."""
    key_id, sep, material = entry.strip().rpartition(":")  # base64 holds no ":"
    if sep and not _ID.match(key_id):
        raise ConfigurationError(
            f"{where}: key id {key_id!r} is not valid: use 1 to 32 of A-Z a-z 0-9 _ . -")
    material = material.strip().replace("-", "+").replace("_", "/")
    try:
        secret = base64.b64decode(material + "=" * (-len(material) % 4), validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != KEY_BYTES:
        named = f"key {key_id!r}" if sep else "a key"
        raise ConfigurationError(
            f"{where}: {named} is not the base64 of {KEY_BYTES} bytes (an AES-256 key); "
            f"{_MAKE_ONE}")
    return Key(key_id if sep else fingerprint(secret), secret)


def parse_keys(text: str, where: str, separator: str) -> tuple[Key, ...]:
    """Every key of ``text``, newest first; the same id twice is refused."""
    entries = [e.strip() for e in text.split(separator)]
    keys = tuple(parse_key(e, where) for e in entries if e and not e.startswith("#"))
    ids = [k.id for k in keys]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigurationError(
            f"{where}: key id {twice[0]!r} is given twice: every key needs its own id")
    return keys


def read_key_file(path: str) -> str:
    """The file's text, refused when anyone but its owner may read or change it."""
    where = f"encryption.key_file {path!r}"
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"{where} may be read or changed by other users (mode "
                f"{stat.S_IMODE(mode):o}): make it private with `chmod 600 {path}`")
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ConfigurationError(
            f"{where} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where} is not text: one [id:]base64 key per line") from None


class Keyring:
    """The keys of this process, newest (active) first."""

    def __init__(self, keys: tuple[Key, ...] = (), source: str = "") -> None:
        self.keys = keys
        self.source = source  # where they came from, for messages
        self._by_id = {k.id: k for k in keys}

    @property
    def active(self) -> Key:
        """The key new payloads are encrypted with."""
        if not self.keys:
            raise ConfigurationError(
                f"a job is to be encrypted but no encryption key is configured: set "
                f"{KEYS_VARIABLE} or [encryption] key_file ({_MAKE_ONE})")
        return self.keys[0]

    def get(self, key_id: str) -> Key | None:
        return self._by_id.get(key_id)

    @property
    def ids(self) -> list[str]:
        return [k.id for k in self.keys]

    def __repr__(self) -> str:
        return f"<Keyring {','.join(self.ids) or 'empty'} from {self.source or 'nowhere'}>"


def load_keyring(settings: EncryptionSettings) -> Keyring:
    """The environment's keys when ``JOBVISOR_ENCRYPTION_KEYS`` is set (it wins, as
    every ``JOBVISOR_*`` variable does), else the key file's, else none."""
    listed = os.environ.get(KEYS_VARIABLE, "").strip()
    if listed:
        return Keyring(parse_keys(listed, KEYS_VARIABLE, ","), KEYS_VARIABLE)
    if settings.key_file:
        text = read_key_file(settings.key_file)
        keys = parse_keys(text, f"encryption.key_file {settings.key_file!r}", "\n")
        return Keyring(keys, settings.key_file)
    return Keyring()


def new_key(key_id: str | None = None) -> str:
    """A fresh key as an ``id:base64`` entry (the id: its fingerprint when not given)."""
    secret = secrets.token_bytes(KEY_BYTES)
    if key_id is not None and not _ID.match(key_id):
        raise ConfigurationError(
            f"key id {key_id!r} is not valid: use 1 to 32 of A-Z a-z 0-9 _ . -")
    return f"{key_id or fingerprint(secret)}:{base64.b64encode(secret).decode()}"
