"""A worker for the kit's tests: input["action"] picks what the job does."""

import os
import sys
import time

import spool_worker


def setup():
    time.sleep(float(os.environ.get("TEST_SETUP_SLEEP", "0.2")))
    if os.environ.get("TEST_SETUP_FAIL"):
        raise RuntimeError("the model would not load")
    marker = os.environ.get("TEST_SETUP_MARKER")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    print("setup printed this to stdout")  # must not disturb the protocol
    return {"model": "loaded", "pid": os.getpid()}


def run(input, ctx):
    action = (input or {}).get("action", "ok")

    if action == "ok":
        ctx.progress(0.5, "halfway")
        ctx.log("hello from the job")
        with open(ctx.output_path("sub/out.txt"), "w") as f:
            f.write(input.get("text", "hi"))
        ctx.progress(1.0, "done", preview="sub/out.txt")
        return {
            "model": ctx.state["model"] if ctx.state else None,
            "job": ctx.job_id,
            "attempt": ctx.attempt,
            "echo": input,
            "mode": ctx.mode,
        }

    if action == "array":  # a task of a job array: where it sits
        return {"array_id": ctx.array_id, "array_index": ctx.array_index, "item": input.get("item")}

    if action == "raise":
        ctx.progress(0.1, "about to fail")
        raise ValueError("boom: " + input.get("why", "no reason"))

    if action == "loop":  # cooperative: progress() raises Canceled
        for i in range(100000):
            ctx.progress(i / 100000, f"step {i}")
            time.sleep(0.02)
        return {"finished": True}

    if action == "cleanup":  # a loop with progress calls, and cleanup in finally
        try:
            for i in range(100000):
                ctx.progress(i / 100000, f"step {i}")
                time.sleep(0.02)
        finally:
            with open(input["marker"], "w") as f:
                f.write(f"cleaned up; canceled={ctx.canceled}")
        return {"finished": True}

    if action == "blocked":  # no progress calls at all: a sleep in try/finally
        try:
            ctx.progress(0.0, "blocked")
            time.sleep(60)
        finally:
            with open(input["marker"], "w") as f:
                f.write(f"cleaned up; canceled={ctx.canceled}")
        return {"finished": True}

    if action == "poll":  # polls ctx.canceled, then returns normally anyway
        ctx.progress(0.0, "polling")
        deadline = time.monotonic() + 60
        while not ctx.canceled and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"returned_after_cancel": True}

    if action == "swallow":  # a broad except Exception must not swallow Canceled
        ctx.progress(0.0, "looping")
        while True:
            try:
                ctx.check_canceled()
                time.sleep(0.01)
            except Exception:
                pass

    if action == "sleep":  # no progress at all: heartbeats must still flow
        time.sleep(float(input.get("seconds", 1)))
        return {"slept": input.get("seconds", 1)}

    if action == "garbage":
        print('{"type": "succeeded", "job": "job_fake", "result": "from stdout"}')
        print("not json at all {{{")
        sys.stdout.write("no newline at the end")
        os.write(1, b"\x00\xff raw bytes on fd 1\n")
        sys.stderr.write('{"type": "failed", "job": "%s", "error": "from stderr"}\n' % ctx.job_id)
        ctx.progress(0.5, "after the garbage")
        return {"clean": True}

    if action == "big":
        ctx.log("x" * 10000)
        ctx.log('"\\' * 3000)  # characters that grow when JSON-escaped
        ctx.progress(0.25, "é" * 5000)
        ctx.log("two\nlines")
        return None

    if action == "bigresult":
        return {"data": "y" * 10000}

    if action == "nan":
        return {"mean": float("nan")}

    if action == "object":
        return {"thing": object()}

    if action == "exit":
        sys.exit(input.get("code", 3))

    if action == "interrupt":
        raise KeyboardInterrupt

    if action == "escape":
        ctx.output_path("../outside.txt")
        return {}

    if action == "input_file":
        with open(ctx.input_file) as f:
            return {"from_file": f.read(), "input": input}

    raise KeyError(action)


if __name__ == "__main__":
    spool_worker.serve(run, setup=setup, info=lambda state: {"model": state["model"]})
