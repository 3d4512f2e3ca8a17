"""Retries with back-off, delayed starts and start deadlines against the real server, with the
sync client and the async one: `submit(retry=, run_at=, delay_s=, start_within_s=)`, the job's
`not_before`/`start_by`/`retry`, `attempts()`, and `DeadlineUnreachable` (409)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import spool_client
from spool_client import Client, JobRetry

from conftest import server_config
from test_jobs import until_running

#: A timestamp the client parsed vs one it sent: the server keeps microseconds, give or take rounding.
CLOSE = timedelta(milliseconds=2)


def test_type_retry_policy_and_attempts(api: Any) -> None:
    flaky = {t.name: t for t in api.types()}["flaky"]
    assert flaky.retry == JobRetry(max_attempts=3, backoff_s=0.2, max_backoff_s=0.5, on=flaky.retry.on)  # type: ignore[union-attr]
    assert flaky.retry is not None and "exit_code" in (flaky.retry.on or [])
    assert {t.name: t for t in api.types()}["noop"].retry is None

    job = api.submit("flaky", {"succeed_on": 3})
    assert job.retry is not None and job.retry.max_attempts == 3 and job.max_attempts == 3
    done = api.wait(job.id, timeout=15)
    assert (done.state, done.attempts, done.exit_code) == ("succeeded", 3, 0)
    assert done.not_before is None and done.start_by is None

    attempts = api.attempts(job.id)
    assert isinstance(attempts, spool_client.AttemptList)
    assert (attempts.job, attempts.state, attempts.max_attempts, attempts.not_before) == (job.id, "succeeded", 3, None)
    assert attempts.retry == done.retry
    assert [a.attempt for a in attempts] == [1, 2, 3] and len(attempts) == 3
    assert [a.state for a in attempts] == ["queued", "queued", "succeeded"]
    for failed in attempts[:2]:
        assert (failed.reason, failed.exit_code, failed.slot) == ("exit_code", 3, 0)
        assert failed.error and failed.started_at and failed.ended_at and failed.retry_at
        assert failed.started_at <= failed.ended_at <= failed.retry_at
        assert failed.retry_at - failed.ended_at <= timedelta(seconds=0.6)  # max_backoff_s 0.5, and a little
    last = attempts.last
    assert last is not None and (last.reason, last.exit_code, last.retry_at) == (None, 0, None)
    assert attempts[1].retry_at is not None and last.started_at is not None and last.started_at >= attempts[1].retry_at - CLOSE
    assert "attempt 1\n--- attempt 2 ---\nattempt 2\n--- attempt 3 ---\nattempt 3\n" in api.logs(job.id)  # one log, every attempt's output, each marked


def test_submit_retry_overrides_the_type(api: Any) -> None:
    # Fewer attempts than it needs: it fails after two, and the last attempt says why.
    job = api.submit("flaky", {"succeed_on": 5}, retry=JobRetry(max_attempts=2, backoff_s=0.05))
    assert job.retry == JobRetry(max_attempts=2, backoff_s=0.05, max_backoff_s=job.retry.max_backoff_s, on=job.retry.on)
    done = api.wait(job.id, timeout=15)
    assert (done.state, done.reason, done.attempts, done.exit_code) == ("failed", "exit_code", 2, 3)
    assert [(a.state, a.reason, a.exit_code) for a in api.attempts(job.id)] == [
        ("queued", "exit_code", 3), ("failed", "exit_code", 3)
    ]
    assert api.attempts(job.id)[-1].retry_at is None

    # `on` with exit codes: 3 is not among them, so the first failure is final.
    only_4 = api.submit("flaky", {"succeed_on": 2}, retry={"max_attempts": 3, "backoff_s": 0.05, "on": [4, "signal"]})
    assert only_4.retry is not None and only_4.retry.on is not None and set(only_4.retry.on) == {4, "signal"}
    assert (api.wait(only_4.id, timeout=15).state, api.get(only_4.id).attempts) == ("failed", 1)

    # A bare number of attempts, on a type without a policy of its own.
    plain = api.submit("noop", retry=2)
    assert plain.retry is not None and plain.retry.max_attempts == 2 and plain.max_attempts == 2
    assert api.wait(plain.id, timeout=15).state == "succeeded"
    assert [a.state for a in api.attempts(plain.id)] == ["succeeded"]

    with pytest.raises(spool_client.InvalidInput):
        api.submit("noop", retry={"max_attempts": 0})


def test_attempts_of_a_running_job(api: Any, spool: Client) -> None:
    job = api.submit("sleep", {"seconds": 30})
    until_running(spool, job.id)
    attempts = api.attempts(job.id)
    assert attempts.state == "running" and attempts.retry is None and attempts.max_attempts == 1
    running = attempts.last
    assert running is not None and (running.attempt, running.state, running.slot) == (1, "running", 0)
    assert running.started_at is not None and running.ended_at is None
    spool.cancel(job.id)
    assert [(a.state, a.reason) for a in api.attempts(api.wait(job.id, timeout=15).id)] == [("canceled", "canceled")]

    with pytest.raises(spool_client.NotFound):
        api.attempts("job_" + "0" * 26)


def test_delay_s_holds_a_job_back(api: Any) -> None:
    job = api.submit("noop", delay_s=1.5)
    assert job.state == "queued" and job.not_before is not None and job.created_at is not None
    assert abs(job.not_before - job.created_at - timedelta(seconds=1.5)) <= CLOSE
    assert job.eta is not None and job.eta.start_in_s is not None and job.eta.start_in_s >= 1.0
    queued = api.attempts(job.id)
    assert (queued.state, queued.not_before, list(queued)) == ("queued", job.not_before, [])
    done = api.wait(job.id, timeout=15)
    assert done.state == "succeeded" and done.started_at is not None and done.started_at >= job.not_before - CLOSE
    assert done.not_before is None  # only on queued jobs


def test_run_at(api: Any, spool: Client) -> None:
    # An aware datetime in any zone goes out in UTC; the server keeps it to the microsecond.
    when = datetime.now(timezone(timedelta(hours=5, minutes=30))) + timedelta(seconds=30)
    job = api.submit("noop", run_at=when)
    assert job.state == "queued" and job.not_before is not None and abs(job.not_before - when) <= CLOSE
    assert job.not_before.utcoffset() == timedelta(0)
    spool.cancel(job.id)

    text = (datetime.now(timezone.utc) + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    as_text = api.submit("noop", run_at=text)
    assert as_text.not_before == datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    spool.cancel(as_text.id)

    past = api.submit("noop", run_at=datetime.now(timezone.utc) - timedelta(hours=1))  # a past time means now
    assert api.wait(past.id, timeout=15).state == "succeeded"

    with pytest.raises(ValueError):
        api.submit("noop", run_at=datetime.now())  # naive: which zone?
    with pytest.raises(ValueError):
        api.submit("noop", run_at=when, delay_s=1)
    # A string with its offset is the UTC time it names (RFC 3339); one that is not RFC 3339 is refused.
    plus_one = timezone(timedelta(hours=1))
    offset_text = (datetime.now(plus_one) + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S+01:00")
    with_offset = api.submit("noop", run_at=offset_text)
    assert with_offset.not_before == datetime.strptime(offset_text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=plus_one)
    spool.cancel(with_offset.id)
    with pytest.raises(spool_client.InvalidInput):
        api.submit("noop", run_at="2026-12-24 18:00")


def test_start_within_s_cancels_a_job_left_waiting(make_api: Any, spawn_server: Any) -> None:
    # A fresh server has learned no run times, so it has no estimate and takes the job; the
    # deadline then passes while the slot is busy, and the job is canceled with reason deadline.
    server = spawn_server(server_config())
    api = make_api(server.url)
    blocker = api.submit("sleep", {"seconds": 30})
    with Client(server.url) as check:
        until_running(check, blocker.id)
    job = api.submit("noop", start_within_s=1)
    assert job.state == "queued" and job.start_by is not None and job.created_at is not None
    assert abs(job.start_by - job.created_at - timedelta(seconds=1)) <= CLOSE
    done = api.wait(job.id, timeout=10)
    assert (done.state, done.reason, done.attempts, done.start_by) == ("canceled", "deadline", 0, None)
    assert done.finished_at is not None and done.finished_at >= job.start_by - CLOSE
    assert list(api.attempts(job.id)) == []
    api.cancel(blocker.id)


def test_start_within_s_refused_when_the_queue_cannot_make_it(make_api: Any, spawn_server: Any) -> None:
    server = spawn_server(server_config())
    api = make_api(server.url)
    learn = api.submit("sleep", {"seconds": 0.5})  # one finished run: the server learns a run time
    assert api.wait(learn.id, timeout=10).state == "succeeded"
    blocker = api.submit("sleep", {"seconds": 10})
    with Client(server.url) as check:
        until_running(check, blocker.id)
    ahead = [api.submit("sleep", {"seconds": 10}).id for _ in range(3)]
    before = {job.id for job in api.list()}

    started = datetime.now(timezone.utc)
    with pytest.raises(spool_client.DeadlineUnreachable) as caught:
        api.submit("sleep", {"seconds": 1}, start_within_s=0.5)
    error = caught.value
    assert isinstance(error, spool_client.Conflict)
    assert (error.status, error.code, error.queued_ahead) == (409, "deadline-unreachable", 3)
    assert error.start_by is not None and abs(error.start_by - started - timedelta(seconds=0.5)) < timedelta(seconds=2)
    estimate = error.estimate
    assert estimate is not None and estimate.start_in_s is not None and estimate.start_in_s > 0.5
    assert estimate.start_at is not None and estimate.start_at > error.start_by and estimate.method
    assert "nothing was stored" in error.detail
    assert {job.id for job in api.list()} == before  # nothing stored

    # The same with a delay: the deadline counts from when the job may first start.
    relaxed = api.submit("noop", delay_s=60, start_within_s=1)
    assert relaxed.not_before is not None and relaxed.start_by is not None
    assert abs(relaxed.start_by - relaxed.not_before - timedelta(seconds=1)) <= CLOSE
    for job_id in ahead + [relaxed.id, blocker.id]:
        api.cancel(job_id)
