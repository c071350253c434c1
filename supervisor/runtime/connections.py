"""How many connections a host opens to Redis, and the names they show in CLIENT LIST.

A worker holds at most two: one for its scripts (claims, outcomes, its idle blocking
wait; its threads take turns) and one for everything else. Job code's own calls go
through a client of their own (``job_client``), opened only if a job uses it.
A supervisor holds at most ``SUPERVISOR_POOL`` + 1: its threads (duties, promoter,
control messages, cron, the metrics endpoint) take their connections from a bounded
pool and wait their turn when all are in use. So a host holds at most
``2 x workers + SUPERVISOR_POOL + 1``, on a single server, through Sentinel or on each
primary of a cluster alike.
"""

from __future__ import annotations

import os
import socket

import redis

from jobs import Broker, BrokerError, BrokerUnavailable, RedisSettings
from jobs.store.connection import make_client
from jobs.store.slot_owner import is_cluster_url
from jobs.store.urls import redact
from supervisor.errors import ExitCode, HaltServer

WORKER_POOL = 1  # plus the script connection: 2 per worker
SUPERVISOR_POOL = 8  # plus the script connection


def client_name(role: str) -> str:
    """``jobvisor:<role>:<host>:<pid>``: who holds a connection, in ``CLIENT LIST``."""
    host = "".join(c if c.isalnum() or c in ".-_" else "_" for c in socket.gethostname())
    return f"jobvisor:{role}:{host}:{os.getpid()}"


def supervisor_client(url: str, settings: RedisSettings) -> redis.Redis:
    return make_client(url, settings, name=client_name("supervisor"),
                       max_connections=SUPERVISOR_POOL)


def worker_client(url: str, settings: RedisSettings) -> redis.Redis:
    return make_client(url, settings, name=client_name("worker"), max_connections=WORKER_POOL)


def job_client(url: str, settings: RedisSettings) -> redis.Redis:
    """What job code's own calls go through in a worker (``fn.enqueue``, ``Job.result``):
    opened when a job first uses it, a connection per thread using it at once."""
    return make_client(url, settings, name=client_name("job"))

def refuse_cluster(broker: Broker) -> None:
    """Stop a start on a Redis Cluster node, whose slots would refuse jobvisor's scripts
    (CROSSSLOT, MOVED) at run time. A server not reachable yet is checked by nobody: its
    replies then carry the same advice (``jobs.store.connection.translate``)."""
    if is_cluster_url(broker.url):
        return
    try:
        enabled = int(broker.client.info("cluster").get("cluster_enabled", 0))
    except (redis.RedisError, BrokerUnavailable, BrokerError):
        return
    if enabled:
        raise HaltServer(
            f"the server at {redact(broker.url)} is a Redis Cluster node: reach a cluster "
            "with a redis+cluster:// URL listing some of its nodes (see the README's "
            "'Redis Cluster' section)", ExitCode.CONFIG_ERROR)
