"""Job arrays against the real server, with the sync client and the async one: `submit_array`
(items, range, fail_fast, Idempotency-Key), `array`, `arrays`, `array_tasks`, `array_outputs`,
`cancel_array`, `retry_array`, `delete_array`, `wait_array`, `watch_array`, `list(array=…)`, and
`Job.array` on a task."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

import spool_client
from spool_client import ArrayRef, Client, JobArray

from test_jobs import until_running

ARRAY_ID = re.compile(r"^arr_[0-9a-hjkmnp-tv-z]{26}$")


def test_range_array_runs_every_task(api: Any, tmp_path: Path) -> None:
    array = api.submit_array("frame", range=(1, 4))
    assert isinstance(array, JobArray) and ARRAY_ID.match(array.id)
    assert (array.type, array.size, array.fail_fast, array.counts.total) == ("frame", 4, False, 4)
    assert array.state in ("queued", "running") and not array.done
    assert array.links["self"] == f"/v1/arrays/{array.id}" and array.created_at is not None

    done = api.wait_array(array.id, timeout=15, interval=0.2)
    assert (done.state, done.progress, done.eta) == ("succeeded", 1.0, None)
    assert done.done and done.succeeded and done.counts == spool_client.ArrayCounts(succeeded=4)
    assert api.array(array.id) == done

    tasks = list(api.array_tasks(array.id, page_size=3))  # two pages
    assert [t.array for t in tasks] == [ArrayRef(array.id, i) for i in (1, 2, 3, 4)]
    assert [t.input for t in tasks] == [{"item": i} for i in (1, 2, 3, 4)]  # index = item = the number
    assert all(t.state == "succeeded" and t.type == "frame" for t in tasks)
    assert api.get(tasks[0].id).array == ArrayRef(array.id, 1)
    # A task's state events name its array: one stream can follow the whole array.
    states = [e for e in api.events(tasks[2].id) if e.event == "state"]
    assert [e.state for e in states] == ["queued", "running", "succeeded"]
    assert all(e.array == ArrayRef(array.id, 3) for e in states)

    outputs = api.array_outputs(array.id)
    assert [(o.task, o.index, o.name) for o in outputs] == [(t.id, i, f"frame-{i}.txt") for t, i in zip(tasks, (1, 2, 3, 4))]
    path = api.download(outputs[2].task, outputs[2].name, tmp_path / "frames/")
    assert path.read_text() == f"3 {array.id}" and outputs[2].size == len(path.read_text())


def test_items_input_and_python_range(api: Any) -> None:
    array = api.submit_array("frame", {"scene": "a"}, items=("x", 2.5), priority=3)
    tasks = list(api.array_tasks(array.id))
    assert [(t.array.index, t.input, t.priority) for t in tasks] == [(0, {"scene": "a", "item": "x"}, 3), (1, {"scene": "a", "item": 2.5}, 3)]
    assert api.wait_array(array.id, timeout=15, interval=0.2).succeeded
    assert [o.name for o in api.array_outputs(array.id)] == ["frame-x.txt", "frame-2.5.txt"]

    numbers = api.submit_array("frame", range=range(5, 8))  # a Python range: 5, 6, 7
    assert numbers.size == 3
    assert [t.array.index for t in api.array_tasks(numbers.id)] == [5, 6, 7]
    assert api.wait_array(numbers.id, timeout=15, interval=0.2).succeeded


def test_idempotency_key_gives_the_same_array(api: Any) -> None:
    key = f"frames-{uuid.uuid4()}"
    first = api.submit_array("frame", range=(0, 1), idempotency_key=key)
    again = api.submit_array("frame", range=(0, 1), idempotency_key=key)
    assert again.id == first.id and again.size == 2
    with pytest.raises(spool_client.IdempotencyConflict):
        api.submit_array("frame", range=(0, 2), idempotency_key=key)
    api.wait_array(first.id, timeout=15, interval=0.2)


def test_failed_task_and_fail_fast(api: Any) -> None:
    plain = api.submit_array("shard", {"bad": 1}, items=[0, 1, 2])
    done = api.wait_array(plain.id, timeout=15, interval=0.2)
    assert (done.state, done.counts.succeeded, done.counts.failed) == ("failed", 2, 1)
    tasks = list(api.array_tasks(plain.id))
    assert [(t.state, t.reason) for t in tasks] == [("succeeded", None), ("failed", "exit_code"), ("succeeded", None)]

    fast = api.submit_array("shard", {"bad": 1}, range=(0, 3), fail_fast=True)
    assert fast.fail_fast
    done = api.wait_array(fast.id, timeout=15, interval=0.2)
    assert done.state == "failed" and done.fail_fast and done.counts.failed == 1 and done.counts.finished == 4
    states = [t.state for t in api.array_tasks(fast.id)]
    assert states[:2] == ["succeeded", "failed"] and states[3] == "canceled"  # the one after may have started


def test_arrays_are_listed_and_jobs_by_their_array(api: Any) -> None:
    shards = api.submit_array("shard", {"bad": 1}, items=[0, 1, 2])
    frames = api.submit_array("frame", range=(0, 1))
    alone = api.submit("sleep", {"seconds": 0})
    api.wait_array(shards.id, timeout=15, interval=0.2)
    api.wait(alone.id, timeout=15)

    newest = list(api.arrays(page_size=1))  # every array on the shared server, one page each
    assert [a.id for a in newest[:2]] == [frames.id, shards.id]
    assert len({a.id for a in newest}) == len(newest)
    assert newest[1] == api.array(shards.id) and newest[1].counts.failed == 1
    assert [a.id for a in api.arrays("shard")][0] == shards.id
    assert all(a.type == "frame" for a in api.arrays("frame"))

    failed = list(api.list("failed", array=shards.id))
    assert [(t.array, t.state) for t in failed] == [(ArrayRef(shards.id, 1), "failed")]
    assert [t.array.index for t in api.list(array=shards.id, page_size=2)] == [2, 1, 0]
    alone_only = list(api.list(array="none"))
    assert alone_only[0].id == alone.id and all(j.array is None for j in alone_only)
    with pytest.raises(spool_client.BadRequest):
        list(api.list(array="everything"))
    api.wait_array(frames.id, timeout=15, interval=0.2)


def test_retry_array(api: Any) -> None:
    plain = api.submit_array("shard", {"bad": 12}, range=(10, 13))
    done = api.wait_array(plain.id, timeout=15, interval=0.2)
    assert done.counts.failed == 1
    again = api.retry_array(plain.id, idempotency_key=f"again-{plain.id}")
    assert again.id != plain.id and again.size == 1 and again.type == "shard"
    assert [(t.array.index, t.input) for t in api.array_tasks(again.id)] == [(12, {"bad": 12, "item": 12})]
    assert api.retry_array(plain.id, idempotency_key=f"again-{plain.id}").id == again.id  # a repeat: the same array
    assert api.wait_array(again.id, timeout=15, interval=0.2).state == "failed"
    assert api.array(plain.id) == done  # the array itself does not change
    fine = api.submit_array("shard", {"bad": -1}, items=[0])
    api.wait_array(fine.id, timeout=15, interval=0.2)
    with pytest.raises(spool_client.NothingToRetry):
        api.retry_array(fine.id)


def test_cancel_array(api: Any, spool: Client) -> None:
    array = api.submit_array("sleep", {"seconds": 30}, range=(0, 2))
    first = next(iter(api.array_tasks(array.id)))
    until_running(spool, first.id)
    stopping = api.cancel_array(array.id)
    assert stopping.id == array.id and stopping.counts.queued == 0
    done = api.wait_array(array.id, timeout=15, interval=0.2)
    assert done.state == "canceled" and done.counts == spool_client.ArrayCounts(canceled=3)
    assert [t.state for t in api.array_tasks(array.id)] == ["canceled"] * 3
    with pytest.raises(spool_client.AlreadyFinished):
        api.cancel_array(array.id)


def test_delete_array(api: Any, spool: Client) -> None:
    array = api.submit_array("sleep", {"seconds": 30}, range=(0, 1))
    with pytest.raises(spool_client.NotEnded):
        api.delete_array(array.id)
    tasks = [t.id for t in api.array_tasks(array.id)]
    api.cancel_array(array.id)
    api.wait_array(array.id, timeout=15, interval=0.2)
    with pytest.raises(spool_client.ArrayTask):
        api.delete(tasks[0])  # ended, but it goes only with its array
    assert api.delete_array(array.id) is None
    with pytest.raises(spool_client.NotFound):
        api.array(array.id)
    with pytest.raises(spool_client.NotFound):
        api.get(tasks[1])
    with pytest.raises(spool_client.NotFound):
        api.delete_array(array.id)


def test_watch_and_wait_timeout(api: Any, spool: Client) -> None:
    array = api.submit_array("sleep", {"seconds": 30}, range=(0, 1))
    with pytest.raises(spool_client.WaitTimeout) as caught:
        api.wait_array(array.id, timeout=0.3, interval=0.1)
    assert isinstance(caught.value.job, JobArray) and caught.value.job.id == array.id and not caught.value.job.done
    seen = []
    for snapshot in api.watch_array(array.id, timeout=15, interval=0.2):
        seen.append(snapshot)
        if len(seen) == 1:
            spool.cancel_array(array.id)
    assert seen[-1].state == "canceled" and all(not s.done for s in seen[:-1])
    assert [s.progress for s in seen] == sorted(s.progress for s in seen)


def test_array_errors(api: Any) -> None:
    with pytest.raises(spool_client.NotFound):
        api.array("arr_" + "0" * 26)
    with pytest.raises(spool_client.NotFound):
        list(api.array_tasks("arr_" + "0" * 26))
    with pytest.raises(spool_client.InvalidInput):
        api.submit_array("sleep", {"seconds": -1}, range=(0, 1))  # every task's input is checked
    with pytest.raises(spool_client.InvalidInput) as caught:
        api.submit_array("frame", items=["x", {"k": 1}])  # an object cannot go into frame's command
    assert "task 1" in caught.value.detail
    with pytest.raises(spool_client.InvalidInput):
        api.submit_array("no-such-type", range=(0, 1))
    with pytest.raises(ValueError):
        api.submit_array("frame", items=[1], range=(0, 1))
    with pytest.raises(ValueError):
        api.submit_array("frame")
    with pytest.raises(ValueError):
        api.submit_array("frame", range=(0, 10_000))  # 10,001 tasks
