"""Protocol v2 (warm workers), end to end over real FIFOs."""

import time

import pytest


def test_ready_after_setup(start_worker, tmp_path):
    marker = tmp_path / "setup-ran"
    server = start_worker(env={"TEST_SETUP_MARKER": str(marker), "TEST_SETUP_SLEEP": "0.5"})
    started = time.monotonic()
    seen = server.until_type("ready", timeout=15)
    assert time.monotonic() - started >= 0.5  # not before setup
    assert marker.exists(), "ready came before setup() finished"
    assert [m["type"] for m in seen] == ["ready"]  # nothing but heartbeats before it
    info = seen[0]["info"]
    assert info["model"] == "loaded"  # serve(info=...) merged in
    assert info["kit"].startswith("spool-worker ")
    assert info["pid"] == server.proc.pid
    # setup's own print went to stdout (the worker log), not the protocol
    server.send({"type": "shutdown"})
    assert server.wait_exit() == 0
    assert "setup printed this to stdout" in server.stdout()


def test_job_round_trip(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": "ok", "text": "contents"}, attempt=2)
    seen = server.until_done(job["job"])
    assert [m["type"] for m in seen] == ["progress", "log", "progress", "output", "succeeded"]
    assert all(m["job"] == job["job"] for m in seen)
    assert seen[0]["fraction"] == 0.5 and seen[0]["message"] == "halfway"
    assert seen[1]["line"] == "hello from the job"
    assert seen[2] == {"type": "progress", "job": job["job"], "fraction": 1.0, "message": "done", "preview": "sub/out.txt"}
    assert seen[3]["name"] == "sub/out.txt"
    assert seen[4]["result"] == {
        "model": "loaded",
        "job": job["job"],
        "attempt": 2,
        "echo": {"action": "ok", "text": "contents"},
        "mode": "worker",
    }
    assert (job["output_dir"] / "sub" / "out.txt").read_text() == "contents"

    # the same warm process takes the next job, state intact
    job2 = server.job({"action": "ok"})
    done = server.until_done(job2["job"])[-1]
    assert done["type"] == "succeeded" and done["result"]["model"] == "loaded"
    assert server.proc.poll() is None


def test_a_task_of_a_job_array_knows_its_array_and_index(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    task = server.job({"action": "array", "item": 7}, extra={"array_id": "arr_x", "array_index": 7})
    assert server.until_done(task["job"])[-1]["result"] == {"array_id": "arr_x", "array_index": 7, "item": 7}
    plain = server.job({"action": "array"})
    assert server.until_done(plain["job"])[-1]["result"] == {"array_id": None, "array_index": None, "item": None}


def test_input_from_file_when_not_inline(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": "input_file", "n": 7}, inline=False)
    done = server.until_done(job["job"])[-1]
    assert done["type"] == "succeeded"
    assert done["result"]["input"] == {"action": "input_file", "n": 7}


def test_exception_becomes_failed_with_traceback_on_stderr(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": "raise", "why": "bad input"})
    seen = server.until_done(job["job"])
    assert seen[-1] == {"type": "failed", "job": job["job"], "error": "ValueError: boom: bad input"}
    stderr = server.stderr()
    assert "Traceback (most recent call last)" in stderr
    assert "ValueError: boom: bad input" in stderr
    assert "kit_worker.py" in stderr  # the user's frame is in the traceback
    # the worker survives (the server recycles it, but the kit must not depend on that)
    job2 = server.job({"action": "ok"})
    assert server.until_done(job2["job"])[-1]["type"] == "succeeded"


@pytest.mark.parametrize("action", ["loop", "poll", "swallow"])
def test_cancel_during_a_long_job(start_worker, action):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": action})
    server.until_type("progress")  # it is running
    sent = time.monotonic()
    server.send({"type": "cancel", "job": job["job"]})
    seen = server.until_done(job["job"], timeout=5)
    assert time.monotonic() - sent < 2.0
    assert seen[-1] == {"type": "failed", "job": job["job"], "error": "canceled"}
    # a cancel for some other job is ignored; the worker still works
    server.send({"type": "cancel", "job": "job_unknown"})
    job2 = server.job({"action": "ok"})
    assert server.until_done(job2["job"])[-1]["type"] == "succeeded"


def test_heartbeats_during_setup_and_during_a_job(start_worker):
    server = start_worker(heartbeat_s=0.2, env={"TEST_SETUP_SLEEP": "1.0"})
    server.until_type("ready", timeout=15)
    assert sum(m["type"] == "heartbeat" for m in server.received) >= 3  # while setup ran

    job = server.job({"action": "sleep", "seconds": 1.5})
    first = len(server.received)
    server.until_done(job["job"], timeout=10)
    during = [t for m, t in zip(server.received[first:], server.arrivals[first:]) if m["type"] == "heartbeat"]
    assert len(during) >= 4, f"{len(during)} heartbeats during a 1.5 s job at 0.2 s"
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert max(gaps) < 0.6, f"a silence of {max(gaps):.2f} s is 3 intervals: the server would call it hung"
    assert all(m == {"type": "heartbeat"} for m in server.received if m["type"] == "heartbeat")


def test_shutdown_exits_zero(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    server.send({"type": "shutdown"})
    assert server.wait_exit(5) == 0


def test_eof_on_commands_exits_zero(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    server.close_commands()
    assert server.wait_exit(5) == 0


def test_shutdown_during_a_job_stops_it_and_exits_zero(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": "loop"})
    server.until_type("progress")
    server.send({"type": "shutdown"})
    assert server.wait_exit(5) == 0
    # no answer for the interrupted job: the server treats it like any worker that left
    assert not [m for m in server.received if m["type"] in ("succeeded", "failed")]
    del job


def test_shutdown_during_setup_exits_without_ready(start_worker):
    server = start_worker(env={"TEST_SETUP_SLEEP": "1.0"})
    server.send({"type": "shutdown"})
    assert server.wait_exit(10) == 0
    assert not [m for m in server.received if m["type"] == "ready"]


def test_setup_failure_exits_nonzero_without_ready(start_worker):
    server = start_worker(env={"TEST_SETUP_FAIL": "1"})
    assert server.wait_exit(10) == 1
    stderr = server.stderr()
    assert "RuntimeError: the model would not load" in stderr
    assert "Traceback" in stderr


def test_garbage_on_stdout_does_not_touch_the_protocol(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": "garbage"})
    seen = server.until_done(job["job"])
    assert [m["type"] for m in seen] == ["progress", "succeeded"]
    assert seen[-1]["result"] == {"clean": True}
    # the prints went to stdout/stderr (the job's log), flushed before the job ended
    stdout = server.stdout()
    assert '"result": "from stdout"' in stdout
    assert "no newline at the end" in stdout
    assert "from stderr" in server.stderr()


def test_malformed_and_unknown_commands_are_ignored(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    server.send(b"this is not json\n")
    server.send(b"[1, 2, 3]\n")
    server.send(b"\n")
    server.send({"type": "from-the-future", "job": "job_x", "extra": {"a": 1}})
    job = server.job({"action": "ok"})
    assert server.until_done(job["job"])[-1]["type"] == "succeeded"
    assert "malformed command" in server.stderr()


def test_long_lines_are_truncated_to_fit(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": "big"})
    seen = server.until_done(job["job"])  # next_message asserts every line <= 4096 bytes
    assert [m["type"] for m in seen] == ["log", "log", "progress", "log", "log", "succeeded"]
    for m in seen[:3]:
        text = m.get("line", m.get("message"))
        assert text.endswith("…[truncated]")
        assert len(text) > 1000  # truncated to fit, not emptied
    assert seen[2]["message"].startswith("ééé")
    assert [seen[3]["line"], seen[4]["line"]] == ["two", "lines"]
    assert "result" not in seen[-1]


def test_result_too_big_goes_to_a_file(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": "bigresult"})
    done = server.until_done(job["job"])[-1]
    assert done["type"] == "succeeded"
    assert done["result"]["result_file"] == "result.json"
    assert done["result"]["truncated"] is True
    assert '"data":"yyyy' in (job["output_dir"] / "result.json").read_text()


@pytest.mark.parametrize(
    "action, error",
    [
        ("nan", "TypeError: run() returned a result that is not JSON: Out of range float values"),
        ("object", "TypeError: run() returned a result that is not JSON: Object of type object"),
        ("escape", "ValueError: output name must stay inside the output dir"),
    ],
)
def test_bad_results_fail_cleanly(start_worker, action, error):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": action})
    done = server.until_done(job["job"])[-1]
    assert done["type"] == "failed"
    assert done["error"].startswith(error), done["error"]


def test_sys_exit_in_run_answers_failed_then_exits(start_worker):
    server = start_worker()
    server.until_type("ready", timeout=15)
    job = server.job({"action": "exit"})
    done = server.until_done(job["job"])[-1]
    assert done == {"type": "failed", "job": job["job"], "error": "SystemExit: 3"}
    assert server.wait_exit(5) == 3
