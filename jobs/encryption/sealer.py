"""What a job's arguments, result and errors become when encrypted, and back.

Each is sealed on its own, bound to its job (``envelope.associated``): the arguments
(MessagePack of ``[args, kwargs]``) to the job id and function, the result to the job id,
an error's message and traceback to the job id.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from jobs.encryption.envelope import associated, is_sealed, key_id_of, seal, unseal
from jobs.encryption.keyring import Keyring, load_keyring
from jobs.errors import DecryptionError
from jobs.records import AttemptError, JobSpec, encoder
from jobs.settings import EncryptionSettings

HIDDEN = "<encrypted>"  # what stands for a sealed value where it cannot be read

_arguments = msgspec.msgpack.Decoder(tuple[list[Any], dict[str, Any]])
_error_text = msgspec.msgpack.Decoder(tuple[str, str])


class Sealer:
    """One process's view of encryption: the ``[encryption]`` settings and its keys,
    read on first use (a process that meets no encrypted job never reads them)."""

    def __init__(self, settings: EncryptionSettings | None = None,
                 keyring: Keyring | None = None) -> None:
        self.settings = settings or EncryptionSettings()
        self._keyring = keyring

    def adopt(self, settings: EncryptionSettings) -> None:
        """New settings (a reload); the keys are read again on next use."""
        self.settings = settings
        self._keyring = None

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            self._keyring = load_keyring(self.settings)
        return self._keyring

    # -- arguments ----------------------------------------------------------------------------

    def seal_arguments(self, job_id: str, function: str, plain: bytes) -> bytes:
        """``plain`` is MessagePack of ``[args, kwargs]``."""
        return seal(self.keyring.active, plain, associated("args", job_id, function))

    def open_spec(self, job_id: str, spec: JobSpec) -> JobSpec:
        """The spec with its arguments in the clear; unchanged when not encrypted."""
        if spec.sealed is None:
            return spec
        plain = unseal(self.keyring, spec.sealed, associated("args", job_id, spec.function),
                       f"the arguments of job {job_id}")
        try:
            args, kwargs = _arguments.decode(plain)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecryptionError(f"the arguments of job {job_id} decrypt to no arguments: "
                                  f"{exc}") from None
        return msgspec.structs.replace(spec, args=args, kwargs=kwargs, sealed=None)

    # -- results ------------------------------------------------------------------------------

    def seal_result(self, job_id: str, result: bytes) -> bytes:
        return seal(self.keyring.active, result, associated("result", job_id))

    def open_result(self, job_id: str, stored: bytes) -> bytes:
        """The encoded return value; ``stored`` itself when it was not encrypted."""
        if not is_sealed(stored):
            return stored
        return unseal(self.keyring, stored, associated("result", job_id),
                      f"the result of job {job_id}")

    # -- errors -------------------------------------------------------------------------------

    def seal_error(self, job_id: str, error: AttemptError) -> AttemptError:
        """Type and kind stay readable; message and traceback are sealed."""
        plain = encoder.encode((error.message, error.traceback))
        return msgspec.structs.replace(
            error, message=HIDDEN, traceback="",
            sealed=seal(self.keyring.active, plain, associated("error", job_id)))

    def open_error(self, job_id: str, error: AttemptError) -> AttemptError:
        if not error.sealed:
            return error
        plain = unseal(self.keyring, error.sealed, associated("error", job_id),
                       f"an error of job {job_id}")
        message, traceback = _error_text.decode(plain)
        return msgspec.structs.replace(error, message=message, traceback=traceback, sealed=b"")

    def readable_errors(self, job_id: str,
                        errors: tuple[AttemptError, ...]) -> tuple[AttemptError, ...]:
        """Errors with what these keys can open opened; the rest keep ``<encrypted>``."""
        if not any(e.sealed for e in errors):
            return errors
        return tuple(self._try_open(job_id, e) for e in errors)

    def _try_open(self, job_id: str, error: AttemptError) -> AttemptError:
        try:
            return self.open_error(job_id, error)
        except (DecryptionError, ValueError, msgspec.DecodeError):
            return error

    # -- the rest -----------------------------------------------------------------------------

    def unique_key(self) -> bytes:
        """The key of an encrypted job's uniqueness digest: a plain digest of its
        arguments would let anyone who can read Redis test guesses of them."""
        secret = self.keyring.active.secret
        return hashlib.sha256(b"jobvisor unique\0" + secret).digest()


def key_of(stored: bytes | None) -> str | None:
    """The key id a stored value is sealed with; None when it is not sealed."""
    if stored is None or not is_sealed(stored):
        return None
    try:
        return key_id_of(stored)
    except DecryptionError:
        return "?"
