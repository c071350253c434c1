"""The store: every Redis read and write of the job library.

``connection`` turns a URL into a client and Redis failures into clear errors; ``keys``
builds every key name; ``lua/`` holds one script per state change, loaded once by
``scripts`` and sent by ``runner``; ``broker`` (with ``job_ops`` and ``maintenance``)
is the typed API the rest of ``jobs`` calls. Nothing outside this package talks to Redis
except through a ``Broker``.
"""
