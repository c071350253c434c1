"""TLS connections that a fork cannot leave stuck, and redis-py's TLS arguments."""

from __future__ import annotations

import os
import threading
from typing import Any

from redis.connection import SSLConnection

from jobs.errors import ConfigurationError
from jobs.settings import RedisSettings
from jobs.store.urls import TLS_SCHEMES, redact, scheme_of

# -- fork safety of TLS ----------------------------------------------------------------
#
# OpenSSL is not fork-safe while another thread is inside it: a child forked at that
# moment inherits OpenSSL's internal locks, taken by a thread that does not exist in the
# child, and its first TLS handshake can then wait forever (observed: a worker hung in
# EVP_KEYEXCH_fetch, forked while the supervisor's Redis threads were connecting; see
# openssl/openssl#19066). So every TLS connection of this library sets itself up (context,
# handshake, the first replies, which carry the session tickets) under one process-wide
# lock, and a fork waits for that lock (at most FORK_WAIT seconds, so a handshake with a
# stalled server cannot delay a fork for long). The child starts with a fresh lock.

FORK_WAIT = 1.0
_tls_lock = threading.RLock()
_locked_for_fork = False


def _before_fork() -> None:
    global _locked_for_fork
    _locked_for_fork = _tls_lock.acquire(timeout=FORK_WAIT)


def _after_fork_in_parent() -> None:
    global _locked_for_fork
    if _locked_for_fork:
        _locked_for_fork = False
        _tls_lock.release()


def _after_fork_in_child() -> None:
    global _tls_lock, _locked_for_fork
    _tls_lock = threading.RLock()
    _locked_for_fork = False


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


class ForkSafeSSLConnection(SSLConnection):
    """redis-py's TLS connection, set up under the fork lock (see above)."""

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        with _tls_lock:
            return super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]

    def on_connect_check_health(self, check_health: bool = True) -> None:
        # No health-check PING inside the handshake: the socket is new, and that PING
        # carried a retry loop of its own, nested in the connect's and the command's (a
        # refused client certificate was tried 15 times, 4 s of back-off, before the
        # error came out).
        with _tls_lock:
            super().on_connect_check_health(check_health=False)


def handshake_lock() -> threading.RLock:
    """The lock TLS handshakes run under (a fresh one in a forked child)."""
    return _tls_lock


def tls_options(url: str, settings: RedisSettings) -> dict[str, Any]:
    """redis-py's ``ssl_*`` arguments from ``[redis] tls_*``; certificates always verified."""
    if scheme_of(url) not in TLS_SCHEMES:
        if settings.tls_configured:
            raise ConfigurationError(
                f"redis.tls_* files are set but the URL {redact(url)!r} does not use TLS: "
                "use rediss:// (or rediss+sentinel://, rediss+cluster://)"
            )
        return {}
    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": settings.tls_ca_file or None,  # None: the system's CAs
        "ssl_certfile": settings.tls_cert_file or None,
        "ssl_keyfile": settings.tls_key_file or None,
        "ssl_check_hostname": settings.tls_check_hostname,
    }
