"""The runtime: the supervisor process and its children.

``arbiter`` is the supervisor's loop (wait, dispatch signals, reap, murder, manage): it
moves the ``pool`` (the children as they are) toward the ``plan`` (what they are to
be), which ``commands`` changes on signals and control messages; ``child`` is a
worker's loop; ``slots`` is the shared memory between them; ``duties`` does the
supervisor's Redis work on threads of its own; ``preload``, ``cron``, ``scaling``,
``reasons``, ``wakeup`` and ``proctitle`` each hold one concern of those loops.
"""
