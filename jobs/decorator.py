"""``@job``: plain functions declared as jobs, with their options, and how a job function
is called, enqueued or bound to per-enqueue options."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

import msgspec

from jobs.backoff import Backoff
from jobs.context import JobContext
from jobs.errors import ConfigurationError
from jobs.inline import dispatch
from jobs.options import Call, EnqueueOptions, check_attempts, check_function_name, check_seconds
from jobs.priority import Priority, parse_priority
from jobs.rates import definition, limit_names
from jobs.registry import register as add_to_registry
from jobs.store.keys import check_name

if TYPE_CHECKING:
    from jobs.job import Job

P = ParamSpec("P")
R = TypeVar("R")

ExceptionTypes = tuple[type[BaseException], ...]
# ``on_failure(ctx, error)``: called in the worker after the last attempt failed; an
# ``async def`` hook runs on the worker's loop.
FailureHook = Callable[[JobContext, BaseException], object]
ShouldQueue = Callable[..., object]


class JobOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Options fixed by ``@job``; ``None`` falls back to the configured defaults
    (``queue``: ``[defaults] queue``, read where the job is enqueued)."""

    queue: str | None = None
    priority: int = int(Priority.NORMAL)
    timeout: float | None = None
    soft_timeout: float | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    retry_on: ExceptionTypes = ()
    dont_retry_on: ExceptionTypes = ()
    result_ttl: float | None = None
    on_dead: str | None = None
    unique_for: float | None = None
    limit: str | None = None  # its own rate and concurrency limit, stored form (jobs.limits)
    limits: tuple[str, ...] = ()  # the named limits it is under
    on_failure: FailureHook | None = None
    should_queue: ShouldQueue | None = None  # called with the arguments; falsy: run inline
    encrypt: bool = False  # arguments, result and error messages encrypted in Redis


class ArgumentBinder:
    """Validates a job's arguments against the function's annotations with msgspec."""

    def __init__(self, func: Callable[..., Any]) -> None:
        signature = inspect.signature(func)
        # A parameter named ``ctx`` receives the JobContext; it is never part of the payload.
        self.wants_ctx = "ctx" in signature.parameters
        self._full = signature
        self._signature = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name != "ctx"])
        try:
            hints = inspect.get_annotations(func, eval_str=True)
        except Exception:  # unresolvable annotations: run without validation
            hints = {}
        self._types = {
            name: hints[name]
            for name, p in self._signature.parameters.items()
            if name in hints
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }
        # The usual job (parameters that may be given by position, no ``ctx``) called with
        # positional arguments is checked by count and converted by position: the same
        # answer as Signature.bind, without its tens of microseconds per job.
        params = list(self._signature.parameters.values())
        self._by_position: tuple[int, int, list[tuple[int, str, Any]]] | None = None
        if not self.wants_ctx and all(p.kind in _POSITIONAL for p in params):
            required = sum(p.default is inspect.Parameter.empty for p in params)
            typed = [(i, p.name, self._types[p.name]) for i, p in enumerate(params)
                     if p.name in self._types]
            self._by_position = (required, len(params), typed)

    def bind(self, args: list[Any], kwargs: dict[str, Any],
             ctx: Any = None) -> tuple[list[Any], dict[str, Any]]:
        """Converted arguments (with ``ctx`` in its place when the function declares it).

        Raises ``TypeError`` (arity) or ``msgspec.ValidationError`` (types).
        """
        if self._by_position is not None and not kwargs:
            required, most, typed = self._by_position
            if required <= len(args) <= most:
                converted = list(args)
                for i, name, kind in typed:
                    if i < len(converted):
                        converted[i] = _convert(name, converted[i], kind)
                return converted, {}
        bound = self._signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            kind = self._types.get(name)
            if kind is not None:
                bound.arguments[name] = _convert(name, value, kind)
        if self.wants_ctx:
            bound = inspect.BoundArguments(self._full, {**bound.arguments, "ctx": ctx})
        return list(bound.args), dict(bound.kwargs)


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _convert(name: str, value: Any, kind: Any) -> Any:
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise msgspec.ValidationError(f"argument {name!r}: {exc}") from None


def _importable_module(func: Callable[..., Any]) -> str:
    """The name a worker imports ``func``'s module by: a script run with ``python -m
    package.module`` is ``__main__`` here but ``package.module`` to a worker."""
    module = func.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name and not spec.name.endswith("__main__"):
            return str(spec.name)
    return module


class JobFunction(Generic[P, R]):
    """A registered job: call it to run it here, ``.enqueue`` it to run it on a worker."""

    def __init__(self, func: Callable[P, R], options: JobOptions) -> None:
        self.func = func
        self.name = f"{_importable_module(func)}:{func.__qualname__}"
        self.job_options = options
        self.binder = ArgumentBinder(func)
        # An ``async def`` job: calling it makes a coroutine, which the worker runs on its loop.
        self.is_async = inspect.iscoroutinefunction(func)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<job {self.name}>"

    def call(self, *args: P.args, **kwargs: P.kwargs) -> Call:
        """This function with these arguments, ready for ``enqueue_many``."""
        return Call(self.name, args, kwargs, self._defaults())

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Queue the job for a worker, or run it here at once when ``should_queue`` says
        so (``jobs.inline``)."""
        return dispatch(self.call(*args, **kwargs))

    def options(self, **overrides: Any) -> BoundOptions:
        return BoundOptions(self, EnqueueOptions(**overrides))

    def _defaults(self) -> EnqueueOptions:
        o = self.job_options
        return EnqueueOptions(queue=o.queue, priority=o.priority, unique_for=o.unique_for)


class BoundOptions:
    """``fn.options(...)``: the same function with per-enqueue options."""

    def __init__(self, fn: JobFunction[Any, Any], options: EnqueueOptions) -> None:
        self._fn = fn
        self._options = options

    def call(self, *args: Any, **kwargs: Any) -> Call:
        base = self._fn.call(*args, **kwargs)
        return Call(base.function, base.args, base.kwargs, base.options.merged(self._options))

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        return dispatch(self.call(*args, **kwargs))


def _exception_types(name: str, value: Iterable[type[BaseException]] | None) -> ExceptionTypes:
    types = tuple(value or ())
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise ConfigurationError(f"{name} must list exception classes, got {t!r}")
    return types


class JobDecorator(Protocol):
    """What ``@job(...)`` returns: it keeps the decorated function's signature."""

    def __call__(self, func: Callable[P, R], /) -> JobFunction[P, R]: ...


@overload
def job(func: Callable[P, R], /) -> JobFunction[P, R]: ...


@overload
def job(
    func: None = None,
    *,
    queue: str | None = None,
    priority: int | str = Priority.NORMAL,
    timeout: float | None = None,
    soft_timeout: float | None = None,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
    retry_on: Iterable[type[BaseException]] | None = None,
    dont_retry_on: Iterable[type[BaseException]] | None = None,
    result_ttl: float | None = None,
    on_dead: JobFunction[Any, Any] | str | None = None,
    unique_for: float | None = None,
    rate_limit: str | None = None,
    max_concurrency: int | None = None,
    burst: int | None = None,
    limits: str | Iterable[str] | None = None,
    on_failure: FailureHook | None = None,
    should_queue: ShouldQueue | None = None,
    encrypt: bool = False,
) -> JobDecorator: ...


def job(
    func: Callable[P, R] | None = None,
    *,
    queue: str | None = None,
    priority: int | str = Priority.NORMAL,
    timeout: float | None = None,
    soft_timeout: float | None = None,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
    retry_on: Iterable[type[BaseException]] | None = None,
    dont_retry_on: Iterable[type[BaseException]] | None = None,
    result_ttl: float | None = None,
    on_dead: JobFunction[Any, Any] | str | None = None,
    unique_for: float | None = None,
    rate_limit: str | None = None,
    max_concurrency: int | None = None,
    burst: int | None = None,
    limits: str | Iterable[str] | None = None,
    on_failure: FailureHook | None = None,
    should_queue: ShouldQueue | None = None,
    encrypt: bool = False,
) -> JobFunction[P, R] | JobDecorator:
    """Register a plain function, or an ``async def`` one, as a job (``@job`` or ``@job(...)``).

    ``on_dead`` names another job (a ``@job`` function or ``"module:function"``) that is
    enqueued with the dead job's id, atomically with the death, so it runs exactly once.
    ``unique_for`` makes every enqueue of this function unique by its arguments (see
    ``EnqueueOptions.unique_for``). ``rate_limit="100/m"`` (at most 100 starts in any
    minute; ``burst=B``: a token bucket of B instead) and ``max_concurrency=N`` hold across
    the whole cluster, as do the named limits in ``limits`` (``jobs.limits``).
    ``on_failure(ctx, error)`` is called in the worker once the job is dead (``jobs.hooks``).
    Without ``queue``, jobs go to ``[defaults] queue`` ("default" unless configured).
    ``should_queue(*args, **kwargs)`` returning a falsy value makes ``.enqueue`` run the job
    here at once (``jobs.inline``). ``encrypt=True`` stores its arguments, result and error
    messages encrypted (``jobs.encryption``; the producer must import the function, or
    enqueue with ``options(encrypt=True)``).
    """
    check_attempts(max_attempts)
    if on_failure is not None and not callable(on_failure):
        raise ConfigurationError(
            f"on_failure must be a function taking (ctx, error), got {on_failure!r}")
    for label, value in (("timeout", timeout), ("soft_timeout", soft_timeout),
                         ("result_ttl", result_ttl), ("unique_for", unique_for)):
        check_seconds(label, value)
    hook = on_dead.name if isinstance(on_dead, JobFunction) else on_dead
    if should_queue is not None and not callable(should_queue):
        raise ConfigurationError(f"should_queue must be a callable, got {should_queue!r}")
    options = JobOptions(
        queue=check_name("queue", queue) if queue is not None else None,
        priority=parse_priority(priority),
        timeout=timeout,
        soft_timeout=soft_timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        retry_on=_exception_types("retry_on", retry_on),
        dont_retry_on=_exception_types("dont_retry_on", dont_retry_on),
        result_ttl=result_ttl,
        on_dead=check_function_name(hook) if hook else None,
        unique_for=unique_for,
        limit=definition(rate_limit, max_concurrency, burst),
        limits=limit_names(limits, "@job"),
        on_failure=on_failure,
        should_queue=should_queue,
        encrypt=bool(encrypt),
    )

    register = _Register(options)
    return register(func) if func is not None else register


class _Register:
    """Registers functions with one set of ``@job`` options."""

    def __init__(self, options: JobOptions) -> None:
        self.options = options

    def __call__(self, f: Callable[P, R], /) -> JobFunction[P, R]:
        if "<locals>" in f.__qualname__ or f.__name__ == "<lambda>":
            raise ConfigurationError(
                f"@job on {f.__qualname__}: job functions must be defined at module level "
                "so a worker can import them by name"
            )
        fn = JobFunction(f, self.options)
        add_to_registry(fn.name, fn)
        return fn
