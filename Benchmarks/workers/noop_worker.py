#!/usr/bin/env python3
"""A warm worker for `spool bench` that does nothing, speaking protocol v2 by hand (no kit).

It answers every `job` with `succeeded` at once and records, for each job, when it received
the command and when it sent the answer, so the harness measures the dispatch gap from the
worker's own clock:

    gap(k → k+1) = received(k+1) − sent_succeeded(k)

Environment (besides Spool's SPOOL_MESSAGES, SPOOL_COMMANDS, SPOOL_HEARTBEAT_S):

    SPOOL_BENCH_STAMPS   file to append one line per job to:
                         "<pid> <job id> <recv monotonic ns> <sent monotonic ns> <recv realtime ns> <sent realtime ns>"
    SPOOL_BENCH_SETUP_S  seconds to sleep before `ready` (a model load); default 0

`recv` is read right after os.read() returns the command's bytes (before JSON parsing); `sent`
right before os.write() of the `succeeded` line. The stamp line is written after the answer,
so it is not inside the measured gap unless the server answers faster than one small write.
time.monotonic_ns() is CLOCK_MONOTONIC, the clock the process-mode stamp job (stamp.c) reads.
"""
import json
import os
import threading
import time

messages = os.open(os.environ["SPOOL_MESSAGES"], os.O_WRONLY)
send_lock = threading.Lock()


def send(line: bytes) -> None:
    with send_lock:
        os.write(messages, line)


def heartbeat() -> None:
    interval = float(os.environ.get("SPOOL_HEARTBEAT_S", "5")) / 3
    while True:
        time.sleep(interval)
        send(b'{"type":"heartbeat"}\n')


def main() -> None:
    stamps_path = os.environ.get("SPOOL_BENCH_STAMPS")
    stamps = os.open(stamps_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if stamps_path else -1
    threading.Thread(target=heartbeat, daemon=True).start()
    setup = float(os.environ.get("SPOOL_BENCH_SETUP_S", "0"))
    if setup > 0:
        time.sleep(setup)
    pid = os.getpid()
    send(json.dumps({"type": "ready", "info": {"pid": pid, "setup_s": setup}}).encode() + b"\n")

    commands = os.open(os.environ["SPOOL_COMMANDS"], os.O_RDONLY)
    pending = b""
    while True:
        chunk = os.read(commands, 65536)
        recv_mono, recv_real = time.monotonic_ns(), time.time_ns()
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            command = json.loads(line)
            kind = command.get("type")
            if kind == "shutdown":
                return
            if kind == "cancel":
                send(json.dumps({"type": "failed", "job": command["job"], "error": "canceled"}).encode() + b"\n")
                continue
            if kind != "job":
                continue
            job = command["job"]
            work = float((command.get("input") or {}).get("sleep_s", 0))
            if work > 0:
                time.sleep(work)   # the job's "work"; the gap is measured outside it
            answer = b'{"type":"succeeded","job":"' + job.encode() + b'"}\n'
            sent_mono, sent_real = time.monotonic_ns(), time.time_ns()
            send(answer)
            if stamps >= 0:
                os.write(stamps, f"{pid} {job} {recv_mono} {sent_mono} {recv_real} {sent_real}\n".encode())


if __name__ == "__main__":
    main()
