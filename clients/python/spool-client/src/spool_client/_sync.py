"""`Client`: the blocking client. Its methods run the shared flows of `_core` with httpx.Client."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, Generator, Iterator, List, Literal, Mapping, Optional, Sequence, Type, Union, overload

import httpx

from ._core import (
    FOLLOW_RECONNECT_S,
    RESTART_TIMEOUT_S,
    ClientCore,
    Close,
    DedupArg,
    Effect,
    Emit,
    Flow,
    Open,
    PathType,
    Read,
    ReadAll,
    RetryArg,
    Send,
    Sleep,
    T,
    VerifyTypes,
    ssl_verify,
)
from ._models import ArrayOutput, AttemptList, Event, Health, Job, JobArray, JobType, Output, OutputList, QueueInfo


class Client(ClientCore):
    """A blocking Spool client; use it as a context manager, or call `close()`.

    `url` defaults to `$SPOOL_URL`, then ``http://127.0.0.1:8080``; `token` to `$SPOOL_TOKEN`
    (sent as ``Authorization: Bearer …``; surrounding whitespace, such as the newline of a token
    read from a file, is stripped). `timeout` is seconds per network operation (None: no
    limit); `verify` is True, False, a CA bundle path or an `ssl.SSLContext`; `retries` is how
    many times a request is tried again after a 429, a 503 or a connection failure.
    `restart_timeout` is how long a submit (`submit`, `submit_array`, `retry_array`: they carry
    an Idempotency-Key, so a resend never makes a second job) keeps trying, after `retries`,
    through a server restart — refused or dropped connections, 503 — before it raises (None:
    no limit; 0: only `retries`). `limits` is the `httpx.Limits` of the connection pool; the
    default (`DEFAULT_LIMITS`) puts no cap on connections, since every long-poll and event
    stream holds one while it runs; with a cap, a request that finds none free in `timeout`
    raises `PoolFull`. `transport` replaces httpx's (tests pass an `httpx.MockTransport`).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: Optional[float] = 30.0,
        verify: VerifyTypes = True,
        retries: int = 3,
        user_agent: Optional[str] = None,
        max_retry_wait: float = 60.0,
        restart_timeout: Optional[float] = RESTART_TIMEOUT_S,
        limits: Optional[httpx.Limits] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        super().__init__(url, token, timeout=timeout, retries=retries, user_agent=user_agent, max_retry_wait=max_retry_wait,
                         restart_timeout=restart_timeout, limits=limits)
        self._http = httpx.Client(
            base_url=self.url,
            headers=self._headers,
            timeout=timeout,
            verify=ssl_verify(verify),
            limits=self._limits,
            transport=transport,
            follow_redirects=False,
        )
        #: How the client waits between retries (replaceable in tests).
        self._sleep: Callable[[float], None] = time.sleep

    # -- lifecycle --

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    # -- the driver --

    def _perform(self, effect: Effect, streams: Dict[httpx.Response, Iterator[bytes]]) -> Any:
        if isinstance(effect, Send):
            return self._http.send(self._http.build_request(**self._request_args(effect.spec)))
        if isinstance(effect, Open):
            response = self._http.send(self._http.build_request(**self._request_args(effect.spec)), stream=True)
            streams[response] = response.iter_raw() if effect.raw else response.iter_bytes()
            return response
        if isinstance(effect, Read):
            return next(streams[effect.response], b"")
        if isinstance(effect, ReadAll):
            return effect.response.read()
        if isinstance(effect, Close):
            streams.pop(effect.response, None)
            effect.response.close()
            return None
        if isinstance(effect, Sleep):
            if effect.seconds > 0:
                self._sleep(effect.seconds)
            return None
        raise TypeError(f"unknown effect {effect!r}")

    def _iterate(self, flow: Flow[Any]) -> Generator[Any, None, Any]:
        streams: Dict[httpx.Response, Iterator[bytes]] = {}
        value: Any = None
        error: Optional[Exception] = None
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value
                value, error = None, None
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    value = self._perform(effect, streams)
                except Exception as failure:  # handed to the flow, which decides
                    error = failure
        finally:
            for response in list(streams):
                response.close()
            flow.close()

    def _run(self, flow: Flow[T]) -> T:
        steps = self._iterate(flow)
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        steps.close()
        raise RuntimeError("a flow that returns a value emitted one")

    # -- jobs --

    def submit(
        self,
        type: str,
        input: Any = None,
        *,
        priority: int = 0,
        timeout_s: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        webhook: Optional[str] = None,
        webhook_events: Optional[Sequence[str]] = None,
        retry: Optional[RetryArg] = None,
        run_at: Optional[Union[datetime, str]] = None,
        delay_s: Optional[float] = None,
        start_within_s: Optional[float] = None,
        dedup: Optional[DedupArg] = None,
        dedup_key: Optional[str] = None,
    ) -> Job:
        """Submit a job; returns it as stored (queued, with its position).

        An Idempotency-Key is always sent (a new uuid4 unless given), so a submit retried after
        a dropped connection never makes a second job; it rides out a server restart for up to
        the client's `restart_timeout` (30 s), sending the same key each time. NaN and
        infinities anywhere in the submit raise ValueError here (JSON has none). The same key with the same request
        returns the original job; with another request it raises `IdempotencyConflict`.
        `webhook` is a URL; `webhook_events` any of ``started``, ``progress``, ``completed``.

        `retry` runs a failing job again with back-off, overriding its type's policy: a
        `JobRetry`, a dict of the same fields (``{"max_attempts": 3, "backoff_s": 5, "on":
        ["exit_code", 75]}``) or a number of attempts in all. `run_at` (an aware datetime, sent
        in UTC, or an RFC 3339 UTC string) or `delay_s` holds the job back until then (not
        both). `start_within_s` is a deadline to start, from when the job may first start: a
        submit the queue's estimate says cannot make it raises `DeadlineUnreachable` (a
        `Conflict`; nothing is stored), and a queued job whose deadline passes is canceled with
        reason ``deadline``.

        `dedup` reuses results: ``"queued"`` joins an identical job of yours (same type and
        input) that is queued or running instead of making another; ``{"succeeded_within_s":
        S}`` also reuses one that succeeded at most S seconds ago. `dedup_key` (1–255
        characters) names the identity instead of the input, and implies ``"queued"``. Then
        the job returned may be the earlier one: its `dedup` says ``joined`` or ``reused``
        (None for a new job). Failed and canceled jobs are never reused; a type may have a
        `dedup` rule of its own (`JobType.dedup`).
        """
        return self._run(self._submit(
            type, input, priority, timeout_s, idempotency_key, webhook, webhook_events, retry, run_at, delay_s, start_within_s,
            dedup, dedup_key,
        ))

    def submit_array(
        self,
        type: str,
        input: Optional[Mapping[str, Any]] = None,
        *,
        items: Optional[Sequence[Any]] = None,
        range: Optional[Sequence[int]] = None,
        fail_fast: bool = False,
        priority: int = 0,
        timeout_s: Optional[float] = None,
        idempotency_key: Optional[str] = None,
        webhook: Optional[str] = None,
        webhook_events: Optional[Sequence[str]] = None,
        retry: Optional[RetryArg] = None,
        run_at: Optional[Union[datetime, str]] = None,
        delay_s: Optional[float] = None,
        start_within_s: Optional[float] = None,
    ) -> JobArray:
        """Submit a job array: one task per item of `items` (index = position from 0), or per
        number of `range` — ``(first, last)``, both included, or a Python ``range(first, last + 1)``
        (index = item = the number); at most 10,000. Each task is an ordinary job whose input is
        `input` with ``"item"`` set (``{input.item}`` in a command; ``$SPOOL_ARRAY_INDEX`` and
        ``$SPOOL_ARRAY_ID`` in its environment). `fail_fast` cancels the other tasks once one
        fails. The other options apply to every task, as in `submit`. Returns the `JobArray`;
        the Idempotency-Key (always sent) makes a resent submit answer with the same array.
        """
        return self._run(self._submit_array(
            type, input, items, range, fail_fast, priority, timeout_s, idempotency_key, webhook, webhook_events, retry, run_at,
            delay_s, start_within_s,
        ))

    def get(self, id: str, *, wait: Optional[float] = None) -> Job:
        """One job. With `wait` (≤ 60 s) the server holds the answer until the state changes."""
        return self._run(self._get(id, wait))

    def list(self, state: Optional[str] = None, type: Optional[str] = None, *, array: Optional[str] = None,
             owner: Optional[str] = None, page_size: int = 100) -> Iterator[Job]:
        """Jobs, newest first, filtered by state and type; pages are fetched as you iterate.
        ``array="none"`` leaves out the tasks of job arrays; an array's id lists only its tasks
        (``list("failed", array=array_id)``: the frames that failed). ``owner``: one tenant's
        jobs (an administrator's token; a tenant's may name only itself, else `Forbidden`)."""
        return self._iterate(self._list(state, type, array, owner, page_size))

    def wait(self, id: str, timeout: Optional[float] = None, *, reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Job:
        """Long-poll until the job is succeeded, failed or canceled; `WaitTimeout` after `timeout` s.
        Rides out a server restart (refused or dropped connections, 503) for up to
        `reconnect_timeout` s (None: no limit), never past `timeout`; then `ConnectionFailed`
        (or the 503's `Unavailable`)."""
        return self._run(self._wait(id, timeout, reconnect_timeout))

    def attempts(self, id: str) -> AttemptList:
        """The job's attempts, oldest first, as `Attempt`s (how each ended, its exit code, slot,
        times, and `retry_at` for one that went round again); the list also has the job's
        `state`, `max_attempts`, `retry` policy and `not_before`."""
        return self._run(self._attempts(id))

    def cancel(self, id: str) -> Job:
        """Cancel: a queued job is canceled at once, a running one is stopping
        (`cancel_requested`); a finished one raises `AlreadyFinished` (a `Conflict`)."""
        return self._run(self._cancel(id))

    def delete(self, id: str) -> None:
        """Delete an ended job with its log, outputs and events (as the server's retention does
        later); its Idempotency-Key is free again. A queued or running job raises `NotEnded`
        (cancel it first), a task of a job array `ArrayTask` (both `Conflict`s; delete its array
        with `delete_array`); an unknown id
        `NotFound`."""
        self._run(self._delete(id))

    @overload
    def logs(self, id: str, follow: Literal[False] = ..., *, poll_interval: float = ...,
             reconnect_timeout: Optional[float] = ...) -> str: ...

    @overload
    def logs(self, id: str, follow: Literal[True], *, poll_interval: float = ...,
             reconnect_timeout: Optional[float] = ...) -> Iterator[str]: ...

    @overload
    def logs(self, id: str, follow: bool, *, poll_interval: float = ...,
             reconnect_timeout: Optional[float] = ...) -> Union[str, Iterator[str]]: ...

    def logs(self, id: str, follow: bool = False, *, poll_interval: float = 0.5,
             reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Union[str, Iterator[str]]:
        """The job's stdout and stderr as text; with `follow=True` an iterator of text chunks
        as they are written, ending once the job has finished and its log is read. Following
        rides out a server restart for up to `reconnect_timeout` s, as `wait` does."""
        if follow:
            return self._iterate(self._follow_logs(id, poll_interval, reconnect_timeout))
        return self._run(self._logs(id))

    def outputs(self, id: str) -> OutputList:
        """The job's output files."""
        return self._run(self._outputs(id))

    def download(self, id: str, name: str, path: Optional[PathType] = None) -> Path:
        """Stream an output file to `path` (a file, or a folder to put `name` in; default the
        current folder), through `path + ".part"`, resuming with a Range request where the
        server supports it. Returns where the file is."""
        return self._run(self._download(id, name, path))

    def events(
        self, id: Optional[str] = None, *, last_event_id: Optional[Union[str, int]] = None, reconnect_timeout: Optional[float] = 60.0
    ) -> Iterator[Event]:
        """Server-sent events of one job (ends after its final state and outputs, and at once when
        resumed after them: the server's 204) or of every job (endless). Reconnects after a dropped connection or a server restart with
        Last-Event-ID, so no event is missed or repeated; gives up with `ConnectionFailed` when
        the server stays unreachable for `reconnect_timeout` seconds (None: never)."""
        start = None if last_event_id is None else str(last_event_id)
        return self._iterate(self._events(id, start, reconnect_timeout))

    # -- job arrays --

    def array(self, id: str) -> JobArray:
        """A job array: its state, task counts by state, progress (0–1) and ETA."""
        return self._run(self._array(id))

    def arrays(self, type: Optional[str] = None, *, owner: Optional[str] = None, page_size: int = 20) -> Iterator[JobArray]:
        """Job arrays, newest first (a tenant's own; ``owner``: as in `list`), each as `array`
        shows it; pages are fetched as you iterate."""
        return self._iterate(self._arrays(type, owner, page_size))

    def array_tasks(self, id: str, *, page_size: int = 100) -> Iterator[Job]:
        """The array's tasks in index order (each a `Job` with `.array.index`), page by page as you iterate."""
        return self._iterate(self._array_tasks(id, page_size))

    def array_outputs(self, id: str) -> List[ArrayOutput]:
        """The output files of the array's finished tasks, in task order (`ArrayOutput(task, index,
        name, size, url)`; fetch one with ``download(output.task, output.name, path)``). Tasks of
        one type name their outputs alike: give each task a folder of its own, e.g.
        ``f"frames/{output.index}/"``, or each download replaces the last."""
        return self._run(self._array_outputs(id))

    def cancel_array(self, id: str) -> JobArray:
        """Cancel every task that has not finished: queued ones at once, running ones are asked to
        stop. A finished array raises `AlreadyFinished` (a `Conflict`)."""
        return self._run(self._cancel_array(id))

    def retry_array(self, id: str, *, idempotency_key: Optional[str] = None) -> JobArray:
        """Run the array's failed and canceled tasks again, as a new array (returned): each task
        keeps its index and input, the array its type, priority, timeout, retry policy, webhook
        and fail_fast. The array itself does not change. Nothing failed or canceled raises
        `NothingToRetry` (a `Conflict`). Sends an Idempotency-Key (a new uuid4 unless given), so a
        resent request never makes a second array."""
        return self._run(self._retry_array(id, idempotency_key))

    def delete_array(self, id: str) -> None:
        """Delete a job array whose tasks have all ended, every task with its log, outputs and
        events (as the server's retention does later); its Idempotency-Key is free again. An
        array with a task queued or running raises `NotEnded` (cancel it first); an unknown id
        `NotFound`."""
        self._run(self._delete_array(id))

    def wait_array(self, id: str, timeout: Optional[float] = None, *, interval: float = 2.0,
                   reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> JobArray:
        """Poll until every task has finished (the array is succeeded, failed or canceled), every
        0.1 s at first, backing off to `interval`; `WaitTimeout` (`.job` is the last `JobArray`)
        after `timeout` s. Rides out a server restart for up to `reconnect_timeout` s, as `wait` does."""
        return self._run(self._wait_array(id, timeout, interval, reconnect_timeout))

    def watch_array(self, id: str, timeout: Optional[float] = None, *, interval: float = 2.0,
                    reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Iterator[JobArray]:
        """Like `wait_array`, as an iterator of the array each time it changes (the first answer
        too), ending with the finished array: a progress bar's loop."""
        return self._iterate(self._watch_array(id, timeout, interval, reconnect_timeout))

    # -- server --

    def types(self) -> List[JobType]:
        return self._run(self._types())

    def queue(self) -> QueueInfo:
        return self._run(self._queue())

    def webhook_secret(self, owner: Optional[str] = None) -> str:
        """The secret that signs this token's jobs' webhook deliveries (each tenant has its own);
        check deliveries with `verify_webhook`. ``owner``: another tenant's (an administrator's
        token; a tenant's may name only itself, else `Forbidden`). `NotFound` when the server
        signs nothing (no ``webhook_secret`` in its configuration)."""
        return self._run(self._webhook_secret(owner))

    def release_slot(self, slot: int) -> bool:
        """Brings a quarantined GPU slot back (an administrator's token): True if it was quarantined.
        Raises `Conflict` while its GPU still reads unhealthy, `NotFound` for no such slot."""
        return self._run(self._release_slot(slot))

    def health(self) -> Health:
        """`/healthz`; a draining or degraded server (503) is a `Health` with `ok` False, not an error."""
        return self._run(self._health())
