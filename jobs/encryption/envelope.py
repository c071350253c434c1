"""One sealed value: ``0xC1 0x01 <id length> <key id> <12-byte nonce> <ciphertext+tag>``.

0xC1 is the one byte MessagePack never uses, so a sealed result can sit where a plain
encoded one does and still be told apart. The associated data (never stored) names what
the value is and whose: a ciphertext moved to another job, or from the arguments to the
result, fails to decrypt instead of being taken for that job's.
"""

from __future__ import annotations

import os

from jobs.encryption.keyring import Key, Keyring
from jobs.errors import DecryptionError

MAGIC = b"\xc1"
VERSION = 1
NONCE = 12
TAG = 16
OVERHEAD = 3 + NONCE + TAG  # plus the key id's length


def is_sealed(blob: bytes | None) -> bool:
    return blob is not None and blob[:1] == MAGIC


def associated(purpose: str, job_id: str, function: str = "") -> bytes:
    """What a sealed value is bound to: its purpose, its job, and for arguments the
    function they are for."""
    return f"jobvisor\0{purpose}\0{job_id}\0{function}".encode()


def seal(key: Key, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE)  # 96 random bits: safe for about 2**32 values per key
    kid = key.id.encode()
    return b"".join((MAGIC, bytes((VERSION, len(kid))), kid, nonce,
                     key.cipher.encrypt(nonce, plaintext, aad)))


def key_id_of(blob: bytes) -> str:
    """The id of the key ``blob`` was sealed with; ``DecryptionError`` when malformed."""
    if len(blob) < OVERHEAD or blob[:1] != MAGIC or blob[1] != VERSION:
        raise DecryptionError("encrypted payload is malformed (not a jobvisor envelope, or "
                              "one written by a newer jobvisor)")
    size = blob[2]
    if len(blob) < OVERHEAD + size:
        raise DecryptionError("encrypted payload is truncated")
    return blob[3:3 + size].decode("ascii", "replace")


def unseal(keyring: Keyring, blob: bytes, aad: bytes, what: str) -> bytes:
    """The plaintext, or ``DecryptionError`` naming the key id and what to do."""
    kid = key_id_of(blob)
    key = keyring.get(kid)
    if key is None:
        have = ", ".join(keyring.ids) or "none configured"
        raise DecryptionError(
            f"cannot decrypt {what}: it is encrypted with key {kid!r}, which this process "
            f"does not have (its keys: {have}); add that key to JOBVISOR_ENCRYPTION_KEYS or "
            "[encryption] key_file", kid)
    cipher = key.cipher  # a clear error when the cryptography package is missing
    from cryptography.exceptions import InvalidTag

    start = 3 + blob[2]
    nonce, body = blob[start:start + NONCE], blob[start + NONCE:]
    try:
        return cipher.decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionError(
            f"cannot decrypt {what} with key {kid!r}: the key of that id here is not the one "
            "it was encrypted with, or the stored data was altered", kid) from None
