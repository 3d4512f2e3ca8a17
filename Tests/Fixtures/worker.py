#!/usr/bin/env python3
"""A warm worker for Spool's tests, speaking protocol v2 by hand (no kit), so the server is
tested against the documented wire format. What it does per job is chosen by the input:
sleep, leak_mb, crash, hang, garbage, fail, ignore_cancel, steps (a cooperative long job),
spew (bytes printed to stdout without a newline), say (a line printed to stdout just before
`succeeded`)."""
import json, os, signal, sys, threading, time

messages = os.open(os.environ["SPOOL_MESSAGES"], os.O_WRONLY)
lock = threading.Lock()
beating = threading.Event(); beating.set()
canceled = set()
leaks = []


def send(**message):
    line = (json.dumps(message) + "\n").encode()
    with lock:
        os.write(messages, line)


def heartbeat():
    interval = float(os.environ.get("SPOOL_HEARTBEAT_S", "5")) / 3
    while True:
        time.sleep(interval)
        if beating.is_set():
            send(type="heartbeat")


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576


def run(job):
    spec = job["input"]
    if spec.get("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if spec.get("hang"):
        beating.clear()
        time.sleep(1000)
    if spec.get("garbage"):
        print("{\"type\":\"succeeded\",\"job\":\"%s\"} <- not the protocol" % job["job"], flush=True)
        sys.stdout.write("\x00\x01 binary garbage \xff\n" * 50); sys.stdout.flush()
        print("stderr noise", file=sys.stderr, flush=True)
    if spec.get("say"):
        print(spec["say"], flush=True)
        return send(type="succeeded", job=job["job"])
    if spec.get("spew"):
        sys.stdout.write("y" * spec["spew"]); sys.stdout.flush()
    if spec.get("leak_mb"):
        block = bytearray(spec["leak_mb"] * 1048576)
        for i in range(0, len(block), 4096):
            block[i] = 1
        leaks.append(block)
    if spec.get("fail"):
        return send(type="failed", job=job["job"], error=spec["fail"])
    if spec.get("ignore_cancel"):
        time.sleep(1000)
    for step in range(spec.get("steps", 0)):
        if job["job"] in canceled:
            return send(type="failed", job=job["job"], error="canceled")
        send(type="progress", job=job["job"], fraction=step / spec["steps"], message="step %d" % step)
        time.sleep(0.05)
    time.sleep(spec.get("sleep", 0))
    with open(os.path.join(job["output_dir"], "done.txt"), "w") as f:
        f.write("done\n")
    send(type="log", job=job["job"], line="finished in pid %d" % os.getpid())
    send(type="output", job=job["job"], name="done.txt")
    send(type="succeeded", job=job["job"], result={"pid": os.getpid(), "rss_mb": rss_mb(), "blob": len(spec.get("blob", ""))})


def main():
    threading.Thread(target=heartbeat, daemon=True).start()
    if os.environ.get("FAIL_SETUP"):
        print("setup: cannot load the model", file=sys.stderr, flush=True)
        sys.exit(3)
    send(type="ready", info={"pid": os.getpid()})
    jobs = []
    ready = threading.Condition()

    def read():
        with open(os.environ["SPOOL_COMMANDS"], "rb", buffering=0) as commands:
            pending = b""
            while True:
                chunk = os.read(commands.fileno(), 65536)
                if not chunk:
                    os._exit(0)
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    command = json.loads(line)
                    if command["type"] == "cancel":
                        canceled.add(command["job"])
                    elif command["type"] == "shutdown":
                        os._exit(0)
                    elif command["type"] == "job":
                        with ready:
                            jobs.append(command)
                            ready.notify()

    threading.Thread(target=read, daemon=True).start()
    while True:
        with ready:
            while not jobs:
                ready.wait()
            job = jobs.pop(0)
        try:
            run(job)
        except Exception as error:
            send(type="failed", job=job["job"], error=repr(error))


main()
