"""`AsyncClient`: the asyncio client. Its methods run the shared flows of `_core` with httpx.AsyncClient."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Type,
    Union,
    overload,
)

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


class AsyncClient(ClientCore):
    """The asyncio twin of `Client`, with the same methods and arguments: coroutines, except
    `list`, `events` and `logs(..., follow=True)`, which are async iterators (``async for``).
    Use it as ``async with AsyncClient(...) as spool:``, or call `aclose()`.
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
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        super().__init__(url, token, timeout=timeout, retries=retries, user_agent=user_agent, max_retry_wait=max_retry_wait,
                         restart_timeout=restart_timeout, limits=limits)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=self._headers,
            timeout=timeout,
            verify=ssl_verify(verify),
            limits=self._limits,
            transport=transport,
            follow_redirects=False,
        )
        #: How the client waits between retries (replaceable in tests).
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    # -- lifecycle --

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.aclose()

    # -- the driver --

    async def _perform(self, effect: Effect, streams: Dict[httpx.Response, AsyncIterator[bytes]]) -> Any:
        if isinstance(effect, Send):
            return await self._http.send(self._http.build_request(**self._request_args(effect.spec)))
        if isinstance(effect, Open):
            response = await self._http.send(self._http.build_request(**self._request_args(effect.spec)), stream=True)
            streams[response] = response.aiter_raw() if effect.raw else response.aiter_bytes()
            return response
        if isinstance(effect, Read):
            try:
                return await streams[effect.response].__anext__()
            except StopAsyncIteration:
                return b""
        if isinstance(effect, ReadAll):
            return await effect.response.aread()
        if isinstance(effect, Close):
            streams.pop(effect.response, None)
            await effect.response.aclose()
            return None
        if isinstance(effect, Sleep):
            if effect.seconds > 0:
                await self._sleep(effect.seconds)
            return None
        raise TypeError(f"unknown effect {effect!r}")

    async def _iterate(self, flow: Flow[Any]) -> AsyncIterator[Any]:
        streams: Dict[httpx.Response, AsyncIterator[bytes]] = {}
        value: Any = None
        error: Optional[Exception] = None
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration:
                    return
                value, error = None, None
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    value = await self._perform(effect, streams)
                except Exception as failure:  # handed to the flow, which decides
                    error = failure
        finally:
            for response in list(streams):
                await response.aclose()
            flow.close()

    async def _run(self, flow: Flow[T]) -> T:
        streams: Dict[httpx.Response, AsyncIterator[bytes]] = {}
        value: Any = None
        error: Optional[Exception] = None
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                value, error = None, None
                if isinstance(effect, Emit):
                    raise RuntimeError("a flow that returns a value emitted one")
                try:
                    value = await self._perform(effect, streams)
                except Exception as failure:
                    error = failure
        finally:
            for response in list(streams):
                await response.aclose()
            flow.close()

    # -- jobs --

    async def submit(
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
        """See `Client.submit`."""
        return await self._run(self._submit(
            type, input, priority, timeout_s, idempotency_key, webhook, webhook_events, retry, run_at, delay_s, start_within_s,
            dedup, dedup_key,
        ))

    async def submit_array(
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
        """See `Client.submit_array`."""
        return await self._run(self._submit_array(
            type, input, items, range, fail_fast, priority, timeout_s, idempotency_key, webhook, webhook_events, retry, run_at,
            delay_s, start_within_s,
        ))

    async def get(self, id: str, *, wait: Optional[float] = None) -> Job:
        return await self._run(self._get(id, wait))

    def list(self, state: Optional[str] = None, type: Optional[str] = None, *, array: Optional[str] = None,
             owner: Optional[str] = None, page_size: int = 100) -> AsyncIterator[Job]:
        """Jobs, newest first: ``async for job in spool.list(state="queued")``; see `Client.list`."""
        return self._iterate(self._list(state, type, array, owner, page_size))

    async def wait(self, id: str, timeout: Optional[float] = None, *, reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Job:
        """See `Client.wait`."""
        return await self._run(self._wait(id, timeout, reconnect_timeout))

    async def attempts(self, id: str) -> AttemptList:
        """See `Client.attempts`."""
        return await self._run(self._attempts(id))

    async def cancel(self, id: str) -> Job:
        return await self._run(self._cancel(id))

    async def delete(self, id: str) -> None:
        """See `Client.delete`."""
        await self._run(self._delete(id))

    @overload
    def logs(self, id: str, follow: Literal[False] = ..., *, poll_interval: float = ...,
             reconnect_timeout: Optional[float] = ...) -> Awaitable[str]: ...

    @overload
    def logs(self, id: str, follow: Literal[True], *, poll_interval: float = ...,
             reconnect_timeout: Optional[float] = ...) -> AsyncIterator[str]: ...

    @overload
    def logs(self, id: str, follow: bool, *, poll_interval: float = ...,
             reconnect_timeout: Optional[float] = ...) -> Union[Awaitable[str], AsyncIterator[str]]: ...

    def logs(self, id: str, follow: bool = False, *, poll_interval: float = 0.5,
             reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Union[Awaitable[str], AsyncIterator[str]]:
        """``await spool.logs(id)`` for the text; ``async for chunk in spool.logs(id, follow=True)``."""
        if follow:
            return self._iterate(self._follow_logs(id, poll_interval, reconnect_timeout))
        return self._run(self._logs(id))

    async def outputs(self, id: str) -> OutputList:
        return await self._run(self._outputs(id))

    async def download(self, id: str, name: str, path: Optional[PathType] = None) -> Path:
        return await self._run(self._download(id, name, path))

    def events(
        self, id: Optional[str] = None, *, last_event_id: Optional[Union[str, int]] = None, reconnect_timeout: Optional[float] = 60.0
    ) -> AsyncIterator[Event]:
        """``async for event in spool.events(job_id)``; see `Client.events`."""
        start = None if last_event_id is None else str(last_event_id)
        return self._iterate(self._events(id, start, reconnect_timeout))

    # -- job arrays --

    async def array(self, id: str) -> JobArray:
        """See `Client.array`."""
        return await self._run(self._array(id))

    def arrays(self, type: Optional[str] = None, *, owner: Optional[str] = None, page_size: int = 20) -> AsyncIterator[JobArray]:
        """Job arrays, newest first: ``async for array in spool.arrays()``; see `Client.arrays`."""
        return self._iterate(self._arrays(type, owner, page_size))

    def array_tasks(self, id: str, *, page_size: int = 100) -> AsyncIterator[Job]:
        """The array's tasks in index order: ``async for task in spool.array_tasks(array_id)``."""
        return self._iterate(self._array_tasks(id, page_size))

    async def array_outputs(self, id: str) -> List[ArrayOutput]:
        """See `Client.array_outputs`."""
        return await self._run(self._array_outputs(id))

    async def cancel_array(self, id: str) -> JobArray:
        """See `Client.cancel_array`."""
        return await self._run(self._cancel_array(id))

    async def retry_array(self, id: str, *, idempotency_key: Optional[str] = None) -> JobArray:
        """See `Client.retry_array`."""
        return await self._run(self._retry_array(id, idempotency_key))

    async def delete_array(self, id: str) -> None:
        """See `Client.delete_array`."""
        await self._run(self._delete_array(id))

    async def wait_array(self, id: str, timeout: Optional[float] = None, *, interval: float = 2.0,
                         reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> JobArray:
        """See `Client.wait_array`."""
        return await self._run(self._wait_array(id, timeout, interval, reconnect_timeout))

    def watch_array(self, id: str, timeout: Optional[float] = None, *, interval: float = 2.0,
                    reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> AsyncIterator[JobArray]:
        """``async for array in spool.watch_array(array_id)``; see `Client.watch_array`."""
        return self._iterate(self._watch_array(id, timeout, interval, reconnect_timeout))

    # -- server --

    async def types(self) -> List[JobType]:
        return await self._run(self._types())

    async def queue(self) -> QueueInfo:
        return await self._run(self._queue())

    async def webhook_secret(self, owner: Optional[str] = None) -> str:
        """See `Client.webhook_secret`."""
        return await self._run(self._webhook_secret(owner))

    async def release_slot(self, slot: int) -> bool:
        """See `Client.release_slot`."""
        return await self._run(self._release_slot(slot))

    async def health(self) -> Health:
        return await self._run(self._health())
