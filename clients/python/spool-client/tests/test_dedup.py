"""Result reuse (dedup) against the real server, with the sync client and the async one:
`submit(dedup=, dedup_key=)`, `Job.dedup` from the `Spool-Dedup` header, and a type's own rule."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import spool_client
from spool_client import Client

from test_jobs import until_running


def fresh() -> str:
    return uuid.uuid4().hex  # the shared server keeps earlier tests' jobs: every test's input is new


def blocked(api: Any, spool: Client) -> str:
    """Keep the one slot busy, so that what is submitted next stays queued."""
    blocker = api.submit("sleep", {"seconds": 30})
    until_running(spool, blocker.id)
    return str(blocker.id)


def test_dedup_queued_joins(api: Any, spool: Client) -> None:
    blocker = blocked(api, spool)
    n = fresh()
    first = api.submit("noop", {"n": n}, dedup="queued")
    assert first.state == "queued" and first.dedup is None
    again = api.submit("noop", {"n": n}, dedup="queued")
    assert (again.id, again.dedup, again.state) == (first.id, "joined", "queued")
    assert api.get(first.id).dedup is None  # only a submit's answer says how it was answered
    assert api.submit("noop", {"n": n}).id != first.id  # without dedup: a job of its own
    assert api.submit("noop", {"n": fresh()}, dedup="queued").dedup is None  # another input
    spool.cancel(blocker)
    assert api.wait(first.id, timeout=15).succeeded
    # Succeeded, not queued: "queued" alone does not reuse it.
    assert api.submit("noop", {"n": n}, dedup="queued").id != first.id


def test_dedup_reuses_a_success(api: Any) -> None:
    n = fresh()
    first = api.submit("noop", {"n": n}, dedup={"succeeded_within_s": 600})
    assert first.dedup is None and api.wait(first.id, timeout=15).succeeded
    again = api.submit("noop", {"n": n}, dedup={"succeeded_within_s": 600})
    assert (again.id, again.dedup, again.state) == (first.id, "reused", "succeeded")


def test_dedup_key_names_the_identity(api: Any, spool: Client) -> None:
    blocker = blocked(api, spool)
    key = fresh()
    first = api.submit("noop", {"a": 1}, dedup_key=key)
    again = api.submit("noop", {"a": 2}, dedup_key=key)  # another input, the same key: the same job
    assert (again.id, again.dedup) == (first.id, "joined") and again.input == {"a": 1}
    spool.cancel(blocker)


def test_failed_jobs_are_never_reused(api: Any) -> None:
    n = fresh()
    failed = api.submit("shard", {"item": n, "bad": n}, dedup={"succeeded_within_s": 600})
    assert api.wait(failed.id, timeout=15).state == "failed"
    again = api.submit("shard", {"item": n, "bad": n}, dedup={"succeeded_within_s": 600})
    assert again.id != failed.id and again.dedup is None
    api.wait(again.id, timeout=15)


def test_type_with_dedup(api: Any) -> None:
    types = {t.name: t for t in api.types()}
    assert types["cached"].dedup == {"succeeded_within_s": 3600}
    assert types["noop"].dedup is None
    n = fresh()
    first = api.submit("cached", {"n": n})
    assert api.wait(first.id, timeout=15).succeeded
    again = api.submit("cached", {"n": n})
    assert (again.id, again.dedup) == (first.id, "reused")


def test_bad_dedup_values(api: Any) -> None:
    for options in ({"dedup": "sometimes"}, {"dedup": {"succeeded_within_s": -1}}, {"dedup_key": ""}, {"dedup_key": "k" * 256}):
        with pytest.raises(spool_client.InvalidInput):
            api.submit("noop", **options)
    with pytest.raises(TypeError):
        api.submit("noop", dedup=5)
