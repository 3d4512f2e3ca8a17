"""FastAPI baseline for `spool bench`: the job server people write before they reach for Spool.

The pattern: FastAPI + an asyncio queue + ProcessPoolExecutor(max_workers=1) + an in-memory dict
of job statuses. Nothing is durable: a restart loses every job. The endpoints mirror Spool's wire
contract closely enough for the same load generator to drive both:

    POST /v1/jobs {"type": "noop", "input": {}, "priority": 0}  -> 201, Location, job JSON
    GET  /v1/jobs/{id}[?wait=SECONDS]                             -> job JSON (wait: hold until it changes state)
    GET  /v1/queue                                                -> {"queued": N, "slots": [...]}
    GET  /healthz                                                 -> {"status": "ok"}

Job types run as Python functions inside the pool's worker process:
    noop  returns at once (Spool runs /bin/true)
    busy  spins the CPU for input.seconds (Spool runs the same loop in a python3 child)
    hold  sleeps input.seconds (Spool runs /bin/sleep), used to keep the slot occupied
    noop_process  subprocess.run(["/bin/true"]): a fresh process per job, like Spool's noop
    stamp runs the compiled stamp job (Benchmarks/jobs/stamp.c, path from --stamp-binary) with
          input.file as its argument, via subprocess.run: a fresh process per job, as in Spool
    stampfn  records (pid, start, end) with time.monotonic_ns() inside the pool worker, kept in
          memory; input {"flush": FILE} appends the records so far to FILE as
          "<pid> <start ns> <end ns>" lines (the warm-worker comparison: no process per job)

Run: python3 app.py --host 127.0.0.1 --port 0   (prints "listening on http://127.0.0.1:PORT")
Needs: python3 -m pip install fastapi uvicorn
"""

import argparse
import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, Optional

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

TERMINAL = {"succeeded", "failed", "canceled"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- work done in the pool's worker process -------------------------------------------------

def run_noop(_input: dict) -> int:
    return 0


def run_busy(job_input: dict) -> int:
    seconds = float(job_input.get("seconds", 1))
    t = time.time()
    while time.time() - t < seconds:
        pass
    return 0


def run_hold(job_input: dict) -> int:
    time.sleep(float(job_input.get("seconds", 1)))
    return 0


def run_noop_process(_input: dict) -> int:
    return subprocess.run(["/bin/true"], stdin=subprocess.DEVNULL).returncode


def run_stamp(job_input: dict) -> int:
    binary = os.environ["SPOOL_BENCH_STAMP_BINARY"]
    return subprocess.run([binary, str(job_input["file"]), str(job_input.get("ms", 0))], stdin=subprocess.DEVNULL).returncode


STAMPS: list = []   # in the pool worker: (pid, start, end) per stampfn job, kept until a flush


def run_stampfn(job_input: dict) -> int:
    start = time.monotonic_ns()
    if job_input.get("flush"):   # write the stamps kept so far (outside any measured gap) and forget them
        with open(str(job_input["flush"]), "a") as f:
            f.writelines(f"{pid} {s} {e}\n" for pid, s, e in STAMPS)
        STAMPS.clear()
        return 0
    time.sleep(float(job_input.get("sleep_s", 0)))   # the job's "work", as in the bench worker
    STAMPS.append((os.getpid(), start, time.monotonic_ns()))
    return 0


JOB_TYPES = {"noop": run_noop, "busy": run_busy, "hold": run_hold, "noop_process": run_noop_process,
             "stamp": run_stamp, "stampfn": run_stampfn}


# --- in-memory state ------------------------------------------------------------------------

class JobRequest(BaseModel):
    type: str
    input: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0


jobs: dict[str, dict] = {}
changed: dict[str, asyncio.Event] = {}   # replaced on every state change; waiters hold the old one
queue: "asyncio.PriorityQueue[tuple[int, int, str]]"
sequence = itertools.count()
pool: Optional[ProcessPoolExecutor] = None
running: Optional[str] = None
WORKERS = 1


def transition(job: dict, **fields) -> None:
    job.update(fields)
    old = changed.get(job["id"])
    if job["state"] in TERMINAL:
        changed.pop(job["id"], None)
    else:
        changed[job["id"]] = asyncio.Event()
    if old is not None:
        old.set()


async def dispatcher() -> None:
    global running
    loop = asyncio.get_running_loop()
    while True:
        _, _, job_id = await queue.get()
        job = jobs[job_id]
        if job["state"] != "queued":
            continue
        running = job_id
        transition(job, state="running", started_at=now(), attempts=job["attempts"] + 1, slot=0)
        try:
            code = await loop.run_in_executor(pool, JOB_TYPES[job["type"]], job["input"])
            state, reason = ("succeeded", None) if code == 0 else ("failed", "exit_code")
            transition(job, state=state, reason=reason, exit_code=code, finished_at=now(), slot=None)
        except Exception as error:  # a broken pool is a failed job, as in Spool
            transition(job, state="failed", reason="spawn_failed", error=str(error), finished_at=now(), slot=None)
        finally:
            running = None


@asynccontextmanager
async def lifespan(_app: FastAPI):
    global queue, pool
    queue = asyncio.PriorityQueue()
    pool = ProcessPoolExecutor(max_workers=WORKERS)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(pool, run_noop, {})   # start the worker before serving
    task = asyncio.create_task(dispatcher())
    yield
    task.cancel()
    workers = list(getattr(pool, "_processes", {}).values())
    for process in workers:
        process.kill()   # SIGKILL: forked workers inherit uvicorn's SIGTERM handler and ignore terminate()
    for process in workers:
        process.join(timeout=2)   # reap it, so its CPU time is accounted to this process (the bench's background figure)
    pool.shutdown(wait=False, cancel_futures=True)


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz():
    return {"status": "ok", "queued": queue.qsize()}


@app.post("/v1/jobs", status_code=201)
async def submit(request: JobRequest):
    if request.type not in JOB_TYPES:
        raise HTTPException(status_code=400, detail=f"unknown job type {request.type!r}")
    job_id = uuid.uuid4().hex
    job = {
        "id": job_id, "type": request.type, "state": "queued", "reason": None,
        "input": request.input, "priority": request.priority, "attempts": 0, "max_attempts": 1,
        "created_at": now(), "started_at": None, "finished_at": None,
        "exit_code": None, "signal": None, "error": None, "slot": None, "progress": None,
    }
    jobs[job_id] = job
    changed[job_id] = asyncio.Event()
    queue.put_nowait((-request.priority, next(sequence), job_id))
    return JSONResponse(job, status_code=201, headers={"Location": f"/v1/jobs/{job_id}"})


@app.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, wait: Optional[float] = None):
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail="no such job")
    event = changed.get(job_id)
    if wait and event is not None:
        try:
            await asyncio.wait_for(event.wait(), timeout=min(wait, 300.0))
        except asyncio.TimeoutError:
            pass
    return job


@app.get("/v1/queue")
async def get_queue():
    return {"queued": queue.qsize(), "slots": [{"id": 0, "job": jobs.get(running) if running else None}]}


def main() -> None:
    global WORKERS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="ProcessPoolExecutor max_workers")
    parser.add_argument("--stamp-binary", help="the compiled Benchmarks/jobs/stamp.c, for the stamp job type")
    args = parser.parse_args()
    WORKERS = args.workers
    if args.stamp_binary:
        os.environ["SPOOL_BENCH_STAMP_BINARY"] = args.stamp_binary   # inherited by the pool worker
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn normally disables Nagle on each connection; with a socket handed over it may not
    # (proto 0 after fromfd), and Nagle + delayed ACK adds 40 ms to every keep-alive response.
    # Linux copies TCP_NODELAY from the listening socket to the connections it accepts.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    port = sock.getsockname()[1]
    print(f"listening on http://{args.host}:{port}", flush=True)
    # access_log off: Spool does not log every request either, and the log would dominate the cost.
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
