"""Redis bytes per queued job (no arguments), measured over 100,000 jobs.

Run: python -m bench.memory
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from jobs import Broker, Queue, RedisSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.server import ValkeyServer


def main(n: int = 100_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyServer(Path(tmp))
        server.start()
        try:
            broker = Broker(server.url, redis_settings=RedisSettings(namespace="mem"))
            before = broker.client.info("memory")["used_memory"]
            q = Queue("default", broker)
            q.enqueue_many([("examples.cpu:noop",) for _ in range(n)])
            after = broker.client.info("memory")["used_memory"]
            print(f"{n} queued jobs: {(after - before) / n:.0f} bytes per job "
                  f"(used_memory {before} -> {after})")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
