"""``chain(a, b, c)``: jobs that run one after another, each once the previous completed."""

from __future__ import annotations

from typing import Any

import msgspec

from jobs.decorator import JobFunction
from jobs.enqueue import enqueue_prepared, prepare_call
from jobs.errors import ConfigurationError
from jobs.job import Job
from jobs.options import Call, EnqueueOptions, Prepared
from jobs.store.broker import Broker, default_broker


def as_call(item: Call | JobFunction[Any, Any], what: str) -> Call:
    """A ``Call`` as given, or a ``@job`` function called without arguments."""
    if isinstance(item, Call):
        return item
    if isinstance(item, JobFunction):
        return item.call()
    raise ConfigurationError(
        f"{what} takes calls such as fn.call(*args) or queue.call('module:function', ...), "
        f"got {item!r}"
    )


class Chain:
    """Each link waits (state ``waiting``) until the previous one completed.

    When a link ends dead or canceled, every later link is canceled with the reason
    ("parent <id> ended dead"), in the same atomic step. With ``pass_results=True`` each
    link after the first receives the previous link's return value as its first argument.
    """

    def __init__(self, *calls: Call | JobFunction[Any, Any], pass_results: bool = False) -> None:
        if not calls:
            raise ConfigurationError("chain() needs at least one call")
        self.calls = [as_call(c, "chain()") for c in calls]
        for c in self.calls[1:]:
            if c.options.depends_on or c.options.unique_for is not None:
                raise ConfigurationError(
                    f"chain link {c.function} sets depends_on or unique_for: a chain sets the "
                    "dependencies itself and every link must be a new job"
                )
        self.pass_results = pass_results

    def enqueue(self, broker: Broker | None = None) -> list[Job]:
        """Enqueue every link in one pipelined round trip; returns the links' jobs in order."""
        broker = broker or default_broker()
        prepared: list[Prepared] = []
        for call in self.calls:
            if prepared:
                link = EnqueueOptions(depends_on=[prepared[-1].id],
                                      pass_result=self.pass_results or None)
                call = msgspec.structs.replace(call, options=call.options.merged(link))
            prepared.append(prepare_call(call, broker))
        return [Job(i, broker) for i in enqueue_prepared(prepared, broker)]


def chain(*calls: Call | JobFunction[Any, Any], pass_results: bool = False) -> Chain:
    return Chain(*calls, pass_results=pass_results)
