"""``jobvisor``, the command line: ``main`` parses and dispatches; the commands live in
``job_commands`` (one job), ``ops_commands`` (queues, hosts, dead letters, scaling),
``schedule_commands``, ``top`` and ``demo``, all sharing ``common``."""
