"""The store: every Redis read and write of the job library.

``connection`` turns a URL into a client and Redis failures into clear errors; ``keys``
builds every key name; ``lua/`` holds one script per state change, loaded once by
``scripts`` and sent by ``runner``; ``store`` holds one namespace's client, scripts, keys
and defaults; ``broker`` is the typed API the rest of ``jobs`` calls, built on the store
with its parts ``job_ops`` (``broker.jobs``) and ``maintenance`` (``broker.maintenance``).
Nothing outside this package talks to Redis except through a ``Broker``.
"""
