"""Connections against the real server, with the sync and the async client: many long-polls on
one client at once (its pool), and waits and submits that ride out a server restart. Found by
attacking the build: the 101st concurrent wait failed with "could not connect" (httpx's pool of
100), and wait(), logs(follow=True), wait_array() and submit() gave up 3.5 s into a restart."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List

import httpx
import pytest

import spool_client
from spool_client import AsyncClient, Client

from conftest import SpoolServer, free_port, run_async

#: One more than httpx's own default pool (100 connections).
MANY = 101


def test_more_long_polls_than_httpx_pools_by_default(server: SpoolServer, spool: Client) -> None:
    job = spool.submit("noop", delay_s=60)  # stays queued: every long-poll is held to its end

    async def concurrently() -> List[Any]:
        async with AsyncClient(server.url, timeout=2, retries=0) as client:
            return await asyncio.gather(*(client.get(job.id, wait=3) for _ in range(MANY)), return_exceptions=True)

    started = time.monotonic()
    answers = run_async(concurrently())
    assert [a for a in answers if not isinstance(a, spool_client.Job)] == []
    assert time.monotonic() - started >= 2.9  # they were held, together

    with Client(server.url, timeout=2, retries=0) as client, ThreadPoolExecutor(MANY) as pool:
        futures = [pool.submit(client.get, job.id, wait=3) for _ in range(MANY)]
        assert all(f.result().state == "queued" for f in futures)
    spool.cancel(job.id)


def test_a_pool_with_a_cap_says_it_is_full(server: SpoolServer, spool: Client) -> None:
    job = spool.submit("noop", delay_s=60)
    cap = httpx.Limits(max_connections=1)
    with Client(server.url, timeout=0.5, limits=cap) as client:
        stream = client.events(job.id)
        assert next(stream).state == "queued"  # the stream holds the only connection
        started = time.monotonic()
        with pytest.raises(spool_client.PoolFull, match="all 1 connections"):
            client.get(job.id)
        assert time.monotonic() - started < 2  # at once: not retried
        stream.close()
        assert client.get(job.id).state == "queued"  # free again

    async def capped() -> None:
        async with AsyncClient(server.url, timeout=0.5, limits=cap) as client:
            stream = client.events(job.id)
            assert (await stream.__anext__()).state == "queued"
            with pytest.raises(spool_client.PoolFull):
                await client.get(job.id)
            await stream.aclose()  # type: ignore[attr-defined]
            assert (await client.get(job.id)).state == "queued"

    run_async(capped())
    spool.cancel(job.id)


class RestartOnSleep:
    """A client's sleep between retries that starts the stopped server again at its `after`-th
    call — later than the 3 retries of a one-off request — and sleeps for real from then on."""

    def __init__(self, server: SpoolServer, after: int = 5) -> None:
        self.server = server
        self.after = after
        self.calls = 0

    def __call__(self, seconds: float) -> None:
        self.calls += 1
        if self.calls == self.after:
            self.server.start()
        elif self.calls > self.after:
            time.sleep(seconds)


def test_wait_rides_out_a_restart(make_api: Callable[..., Any], spawn_server: Callable[..., SpoolServer]) -> None:
    server = spawn_server(port=free_port())
    restart = RestartOnSleep(server)
    api = make_api(server.url, sleep=restart)
    job = api.submit("noop", delay_s=0.5)
    server.stop()  # queued jobs wait in the store
    assert api.wait(job.id, timeout=15).state == "succeeded"
    assert restart.calls >= restart.after


def test_follow_logs_rides_out_a_restart(make_api: Callable[..., Any], spawn_server: Callable[..., SpoolServer]) -> None:
    server = spawn_server(port=free_port())
    restart = RestartOnSleep(server)
    api = make_api(server.url, sleep=restart)
    job = api.submit("chatty", {"lines": 3, "delay": 0.05}, delay_s=0.5)
    server.stop()
    assert "".join(api.logs(job.id, follow=True)) == "line 1\nline 2\nline 3\n"
    assert restart.calls >= restart.after


def test_wait_array_rides_out_a_restart(make_api: Callable[..., Any], spawn_server: Callable[..., SpoolServer]) -> None:
    server = spawn_server(port=free_port())
    restart = RestartOnSleep(server)
    api = make_api(server.url, sleep=restart)
    array = api.submit_array("frame", range=(1, 2), delay_s=0.5)
    server.stop()
    assert api.wait_array(array.id, timeout=15, interval=0.2).succeeded
    assert restart.calls >= restart.after


def test_submit_rides_out_a_restart(make_api: Callable[..., Any], spawn_server: Callable[..., SpoolServer]) -> None:
    server = spawn_server(port=free_port())
    restart = RestartOnSleep(server)
    api = make_api(server.url, sleep=restart)
    server.stop()
    job = api.submit("noop", idempotency_key="through-a-restart")
    assert restart.calls >= restart.after
    assert api.wait(job.id, timeout=15).state == "succeeded"
    assert [j.id for j in api.list()] == [job.id]  # one job, however many times it was sent
