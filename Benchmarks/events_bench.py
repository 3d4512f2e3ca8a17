#!/usr/bin/env python3
"""Event-stream benchmark for Spool (standard library only).

    python3 Benchmarks/events_bench.py .build/release/spool [--output Benchmarks/results-events.md]
        [--scenarios ab|a|b] [--server-prefix 'heaptrack -o /tmp/h']

Scenario A: submit -> `succeeded` seen on one open `GET /v1/events` stream, 200 jobs in a row,
            for an empty process-mode job (`noop`: /bin/true) and an empty warm-worker job
            (`noop-worker`), with `--sqlite-synchronous full` (default) and `normal`.
Scenario B: 500 concurrent SSE clients on `/v1/events` while `noop-worker` jobs are submitted at
            ~50/s for 20 s; `GET /v1/jobs/{id}` latency from a separate client process, server RSS,
            and a check that every SSE client received every `state` event, each id above the last.
            `--scenarios b` runs B alone; `--server-prefix` starts the server under a profiler
            (then the RSS figures are the wrapper's, not the server's).

Talks only to 127.0.0.1. The whole run is bounded (SIGALRM) and the server is killed by PID in a
`finally`. Internal: `--role load PORT DURATION RATE PROBES` runs the load/probe client (used by B).
"""
import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
SCRIPT_BUDGET_S = 295          # hard cap for the whole script
A_JOBS = 200
A_WARMUP = 5
B_CLIENTS = 500
B_RATE = 50.0
B_DURATION = 20.0
B_PROBES = 2000

WORKER_SRC = r'''#!/usr/bin/env python3
# Minimal Spool protocol-v2 warm worker: ready, answer every job with succeeded, heartbeat.
import json, os, sys, threading, time
msgs = os.open(os.environ["SPOOL_MESSAGES"], os.O_WRONLY)
lock = threading.Lock()
def send(obj):
    line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    with lock:
        os.write(msgs, line)
def heartbeat():
    interval = float(os.environ.get("SPOOL_HEARTBEAT_S", "5")) / 3
    while True:
        time.sleep(interval)
        send({"type": "heartbeat"})
threading.Thread(target=heartbeat, daemon=True).start()
send({"type": "ready"})
cmds = os.open(os.environ["SPOOL_COMMANDS"], os.O_RDONLY)
buf = b""
while True:
    chunk = os.read(cmds, 65536)
    if not chunk:
        sys.exit(0)
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        t = msg.get("type")
        if t == "job":
            send({"type": "succeeded", "job": msg["job"]})
        elif t == "cancel":
            send({"type": "failed", "job": msg["job"], "error": "canceled"})
        elif t == "shutdown":
            sys.exit(0)
'''


# ----------------------------------------------------------------------------- helpers

def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def ms(x):
    return f"{x * 1000:.2f}"


def parse_at(s):
    # "2026-11-25T15:52:09.776032Z"
    s = s.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return dt.datetime.strptime(s, fmt).replace(tzinfo=dt.timezone.utc).timestamp()


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"({e})"


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class Dechunker:
    """Incremental HTTP/1.1 chunked transfer decoder."""

    def __init__(self):
        self.buf = bytearray()
        self.remaining = 0
        self.need_crlf = False
        self.done = False

    def feed(self, data):
        buf = self.buf
        buf += data
        out = bytearray()
        while not self.done:
            if self.remaining:
                take = min(self.remaining, len(buf))
                out += buf[:take]
                del buf[:take]
                self.remaining -= take
                if self.remaining:
                    break
                self.need_crlf = True
            if self.need_crlf:
                if len(buf) < 2:
                    break
                del buf[:2]
                self.need_crlf = False
            i = buf.find(b"\r\n")
            if i < 0:
                break
            size = int(bytes(buf[:i]).split(b";")[0], 16)
            del buf[:i + 2]
            if size == 0:
                self.done = True
                break
            self.remaining = size
        return bytes(out)


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


class HttpConn:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def request(self, method, path, body=None):
        for attempt in (0, 1):
            if self.writer is None:
                await self.connect()
            try:
                return await self._request(method, path, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    async def _request(self, method, path, body):
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        status, headers = await read_head(self.reader)
        if "content-length" in headers:
            payload = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            payload = b"".join(parts)
        else:
            payload = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, payload

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def open_sse(port, path="/v1/events"):
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    status, headers = await read_head(reader)
    if status != 200:
        writer.close()
        raise RuntimeError(f"SSE {path}: HTTP {status}")
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    return reader, writer, (Dechunker() if chunked else None)


# ----------------------------------------------------------------------------- server

class Server:
    prefix = []   # --server-prefix: a profiler to start the server under

    def __init__(self, binary, workdir, cfg_path, synchronous, tag):
        self.binary, self.workdir, self.cfg, self.sync, self.tag = binary, workdir, cfg_path, synchronous, tag
        self.proc = None
        self.port = None
        self.log_path = Path(workdir) / f"server-{tag}.log"
        self.data_dir = tempfile.mkdtemp(prefix=f"data-{tag}-", dir=workdir)

    def argv(self):
        return self.prefix + [self.binary, "serve", "--host", HOST, "--port", "0", "--data-dir", self.data_dir,
                "--gpus", "none", "--config", str(self.cfg), "--log-level", "warning",
                "--sqlite-synchronous", self.sync]

    def start(self, timeout=30):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv(), stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        prefix = "spool: listening on http://127.0.0.1:"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    self.port = int(line[len(prefix):].strip().rstrip("/"))
                    return
            time.sleep(0.05)
        raise RuntimeError("server did not print its listening line in time")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        # anything the server left in its session (workers): kill by process group id = server pid
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.logf.close()


# ----------------------------------------------------------------------------- scenario A

async def scenario_a(port, job_type, n, warmup):
    """Sequential submit -> `succeeded` observed on one open /v1/events stream."""
    reader, writer, dechunk = await open_sse(port)
    seen = {}        # job id -> {state: (perf_counter, wall, at)}
    waiters = {}     # job id -> future
    buf = bytearray()

    async def pump():
        nonlocal buf
        while True:
            data = await reader.read(65536)
            if not data:
                return
            now_p, now_w = time.perf_counter(), time.time()
            if dechunk is not None:
                data = dechunk.feed(data)
            buf += data
            while True:
                i = buf.find(b"\n\n")
                if i < 0:
                    break
                block = bytes(buf[:i])
                del buf[:i + 2]
                ev, payload = None, None
                for line in block.split(b"\n"):
                    if line.startswith(b"event:"):
                        ev = line[6:].strip()
                    elif line.startswith(b"data:"):
                        payload = line[5:].strip()
                if ev != b"state" or payload is None:
                    continue
                d = json.loads(payload)
                job, state = d.get("job"), d.get("state")
                seen.setdefault(job, {})[state] = (now_p, now_w, parse_at(d["at"]) if "at" in d else None)
                if state in ("succeeded", "failed", "canceled"):
                    fut = waiters.pop(job, None)
                    if fut is not None and not fut.done():
                        fut.set_result(state)

    pump_task = asyncio.create_task(pump())
    conn = HttpConn(port)
    rows = []
    try:
        await conn.connect()
        for i in range(warmup + n):
            t0w = time.time()
            t0 = time.perf_counter()
            status, _, body = await conn.request("POST", "/v1/jobs", {"type": job_type})
            t_ack = time.perf_counter()
            if status != 201:
                raise RuntimeError(f"submit {job_type}: HTTP {status} {body[:300]!r}")
            job = json.loads(body)["id"]
            states = seen.get(job, {})
            final = next((s for s in ("succeeded", "failed", "canceled") if s in states), None)
            if final is None:
                fut = asyncio.get_running_loop().create_future()
                waiters[job] = fut
                final = await asyncio.wait_for(fut, 15)
            if final != "succeeded":
                raise RuntimeError(f"job {job} ended {final}")
            if i < warmup:
                continue
            st = seen[job]
            t_ev = st["succeeded"][0]
            row = {"lat": t_ev - t0, "ack": t_ack - t0}
            try:
                q_at, r_at, s_at = st["queued"][2], st["running"][2], st["succeeded"][2]
                row.update(commit_queued=q_at - t0w, dispatch=r_at - q_at, run=s_at - r_at,
                           deliver=st["succeeded"][1] - s_at)
            except (KeyError, TypeError):
                pass
            rows.append(row)
    finally:
        conn.close()
        pump_task.cancel()
        writer.close()
    return rows


def summarize_a(rows):
    out = {}
    for key in ("lat", "ack", "commit_queued", "dispatch", "run", "deliver"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[key] = (pct(vals, 50), pct(vals, 90), pct(vals, 99), len(vals))
    return out


# ----------------------------------------------------------------------------- scenario B

class SseCounter:
    """One /v1/events client that only counts (cheap parsing); some sample the delivery lag."""

    def __init__(self, idx, sample_lag):
        self.idx = idx
        self.sample_lag = sample_lag
        self.n_state = 0
        self.n_events = 0
        self.last_id = 0
        self.out_of_order = 0
        self.last_rx = None
        self.lags = []
        self.error = None
        self.connected = False
        self.closed = False

    async def run(self, port, ready_evt_counter):
        try:
            reader, writer, dechunk = await open_sse(port)
        except Exception as e:  # noqa: BLE001
            self.error = f"connect: {e!r}"
            ready_evt_counter()
            return
        self.connected = True
        self.writer = writer
        ready_evt_counter()
        buf = bytearray()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    self.closed = True
                    return
                self.last_rx = time.monotonic()
                if dechunk is not None:
                    data = dechunk.feed(data)
                buf += data
                end = buf.rfind(b"\n\n")
                if end < 0:
                    continue
                blocks = bytes(buf[:end]).split(b"\n\n")
                del buf[:end + 2]
                now_w = time.time() if self.sample_lag else 0.0
                for block in blocks:
                    if not block.startswith(b"id:"):
                        continue
                    self.n_events += 1
                    nl = block.find(b"\n")
                    event_id = int(block[3:nl])
                    if event_id <= self.last_id:
                        self.out_of_order += 1
                    self.last_id = event_id
                    if b"\nevent: state\n" in block:
                        self.n_state += 1
                        if self.sample_lag:
                            d = json.loads(block[block.find(b"data:") + 5:])
                            self.lags.append(now_w - parse_at(d["at"]))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            self.error = repr(e)
        finally:
            writer.close()


async def run_load_child(port, duration, rate, probes, timeout):
    """Start the load/probe client as a separate process; returns its JSON report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--role", "load", str(port), str(duration), str(rate),
        str(probes), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("load client timed out")
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed: {err.decode()[-2000:]}")
    return json.loads(out)


async def load_role(port, duration, rate, probes):
    """Child process: submit noop-worker jobs at `rate`/s for `duration` s on one keep-alive
    connection and, on another, GET /v1/jobs/{latest id} `probes` times evenly over the same span."""
    sub, probe = HttpConn(port), HttpConn(port)
    await sub.connect()
    await probe.connect()
    latest = {"id": None}
    submitted, errors, sub_lat = [], [], []
    t_start = time.perf_counter()

    async def submitter():
        i = 0
        while True:
            due = t_start + i / rate
            if due - t_start >= duration:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            status, _, body = await sub.request("POST", "/v1/jobs", {"type": "noop-worker"})
            sub_lat.append(time.perf_counter() - t0)
            if status == 201:
                jid = json.loads(body)["id"]
                submitted.append(jid)
                latest["id"] = jid
            else:
                errors.append(status)
            i += 1

    lat, codes = [], {}

    async def prober():
        while latest["id"] is None:
            await asyncio.sleep(0.001)
        t_p = time.perf_counter()
        span = max(duration - (t_p - t_start), 1.0)
        for i in range(probes):
            due = t_p + i * span / probes
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            status, _, _ = await probe.request("GET", f"/v1/jobs/{latest['id']}")
            lat.append(time.perf_counter() - t0)
            codes[status] = codes.get(status, 0) + 1

    await asyncio.gather(submitter(), prober())
    elapsed = time.perf_counter() - t_start
    sub.close()
    probe.close()
    json.dump({"submitted": len(submitted), "last_id": submitted[-1] if submitted else None,
               "submit_errors": errors, "elapsed_s": elapsed, "probe_lat": lat, "probe_codes": codes,
               "submit_lat": sub_lat, "cpu_s": sum(os.times()[:2])}, sys.stdout)


async def wait_job_final(port, job_id, timeout):
    conn = HttpConn(port)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            status, _, body = await conn.request("GET", f"/v1/jobs/{job_id}?wait=2")
            if status == 200 and json.loads(body)["state"] in ("succeeded", "failed", "canceled"):
                return True
    finally:
        conn.close()
    return False


async def scenario_b(server, budget_s):
    port, pid = server.port, server.proc.pid
    res = {}
    # warm up the worker (first job starts it)
    conn = HttpConn(port)
    for _ in range(3):
        st, _, body = await conn.request("POST", "/v1/jobs", {"type": "noop-worker"})
        assert st == 201, body
        await wait_job_final(port, json.loads(body)["id"], 30)
    conn.close()

    # baseline: same load without SSE clients (shorter when the time budget is tight)
    base_dur = B_DURATION if budget_s > 150 else (B_DURATION / 2 if budget_s > 110 else 0)
    if base_dur:
        base = await run_load_child(port, base_dur, B_RATE, int(B_PROBES * base_dur / B_DURATION), base_dur + 30)
        await wait_job_final(port, base["last_id"], 20)
        res["baseline"] = base
        res["baseline_dur"] = base_dur

    await asyncio.sleep(1.0)
    res["rss_before"] = rss_kib(pid)

    clients = [SseCounter(i, sample_lag=(i % 25 == 0)) for i in range(B_CLIENTS)]
    n_ready = [0]

    def ready():
        n_ready[0] += 1

    t_c = time.perf_counter()
    tasks = []
    for i, c in enumerate(clients):
        tasks.append(asyncio.create_task(c.run(port, ready)))
        if i % 50 == 49:
            await asyncio.sleep(0.01)
    deadline = time.monotonic() + 30
    while n_ready[0] < B_CLIENTS and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    res["connect_s"] = time.perf_counter() - t_c
    res["connected"] = sum(c.connected for c in clients)
    res["connect_errors"] = [c.error for c in clients if c.error][:5]
    await asyncio.sleep(1.0)
    res["rss_500"] = rss_kib(pid)

    # load, with RSS sampled every 0.5 s
    rss_samples = []
    cpu0_srv, cpu0_me = cpu_s(pid), sum(os.times()[:2])
    load_task = asyncio.create_task(run_load_child(port, B_DURATION, B_RATE, B_PROBES, B_DURATION + 40))
    while not load_task.done():
        rss_samples.append(rss_kib(pid))
        await asyncio.sleep(0.5)
    load = load_task.result()
    res["load"] = load
    res["rss_peak"] = max(rss_samples + [res["rss_500"]])
    res["rss_samples"] = rss_samples

    # drain: every client must see the last job's succeeded; expected = 3 state events per job
    expected = 3 * load["submitted"]
    t_d = time.monotonic()
    drain_deadline = t_d + 30
    while time.monotonic() < drain_deadline:
        if all(c.n_state >= expected or not c.connected for c in clients):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)   # catch any extras (there should be none)
    res["drain_s"] = time.monotonic() - t_d
    res["cpu_srv"] = cpu_s(pid) - cpu0_srv
    res["cpu_sse_client"] = sum(os.times()[:2]) - cpu0_me
    res["rss_end"] = rss_kib(pid)
    res["expected_state"] = expected
    counts = [c.n_state for c in clients if c.connected]
    res["counts"] = counts
    res["client_errors"] = [f"#{c.idx}: {c.error}" for c in clients if c.error][:5]
    res["closed"] = sum(c.closed for c in clients)
    res["last_ids"] = sorted({c.last_id for c in clients if c.connected})[:5]
    res["out_of_order"] = sum(c.out_of_order for c in clients)
    lags = [x for c in clients for x in c.lags]
    res["lags"] = lags
    res["lag_clients"] = sum(1 for c in clients if c.sample_lag)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return res


# ----------------------------------------------------------------------------- main

def newest_source_mtime(root):
    newest = 0.0
    for p in (root / "Sources").rglob("*"):
        if p.is_file():
            newest = max(newest, p.stat().st_mtime)
    return newest


def wait_for_quiet(max_wait):
    t0 = time.monotonic()
    while True:
        la = os.getloadavg()[0]
        if la < 1.5 or time.monotonic() - t0 >= max_wait:
            return la, time.monotonic() - t0
        print(f"  load average {la:.2f} >= 1.5, waiting ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        time.sleep(5)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        _, _, role, port, duration, rate, probes = sys.argv
        assert role == "load"
        asyncio.run(load_role(int(port), float(duration), float(rate), int(probes)))
        return 0

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spool", help="path to a RELEASE spool binary (.build/release/spool)")
    ap.add_argument("--output", default=str(Path(__file__).resolve().parent / "results-events.md"))
    ap.add_argument("--max-load-wait", type=float, default=180, help="seconds to wait for load < 1.5")
    ap.add_argument("--scenarios", default="ab", choices=("ab", "a", "b"), help="which scenarios to run")
    ap.add_argument("--server-prefix", default="", help="command to start the server under (a profiler)")
    args = ap.parse_args()
    Server.prefix = shlex.split(args.server_prefix)
    t_script = time.monotonic()
    cmdline = "python3 " + " ".join(shlex.quote(a) for a in sys.argv)

    def on_alarm(signum, frame):
        raise TimeoutError(f"benchmark exceeded its {SCRIPT_BUDGET_S} s budget")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(SCRIPT_BUDGET_S)

    binary = str(Path(args.spool).resolve())
    repo = Path(__file__).resolve().parent.parent
    stale = None
    if (repo / "Sources").is_dir():
        if os.path.getmtime(binary) < newest_source_mtime(repo):
            stale = "WARNING: the binary is older than the newest file under Sources/ (rebuild: swift build -c release --product spool)"
            print(stale, file=sys.stderr)
    if "/release/" not in binary:
        print("WARNING: this does not look like a release build", file=sys.stderr)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)

    machine = {"nproc": sh("nproc"), "uname": sh("uname -r"), "date": sh("date -Is"),
               "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
               "python": sys.version.split()[0],
               "fs": sh(f"df -T {shlex.quote(tempfile.gettempdir())} | awk 'NR==2{{print $2\" (\"$1\")\"}}'"), "spool_mtime": time.ctime(os.path.getmtime(binary))}
    print(f"load before waiting: {sh('uptime')}", file=sys.stderr)
    la, waited = wait_for_quiet(min(args.max_load_wait, 180))
    uptime_before = sh("uptime")
    print(f"start: {uptime_before}", file=sys.stderr)

    workdir = tempfile.mkdtemp(prefix="spool-events-bench-")
    worker_py = Path(workdir) / "noop_worker.py"
    worker_py.write_text(WORKER_SRC)
    cfg = Path(workdir) / "spool.json"
    cfg.write_text(json.dumps({"job_types": {
        "noop": {"command": ["/bin/true"]},
        "noop-worker": {"command": [sys.executable, str(worker_py)], "mode": "worker", "heartbeat_s": 5},
    }}, indent=2))

    servers = []
    results_a = {}
    res_b = None
    error = None
    try:
        for sync in (("full", "normal") if "a" in args.scenarios else ()):
            srv = Server(binary, workdir, cfg, sync, f"a-{sync}")
            servers.append(srv)
            srv.start()
            for jt in ("noop", "noop-worker"):
                print(f"A: {jt} synchronous={sync} ...", file=sys.stderr)
                rows = asyncio.run(asyncio.wait_for(scenario_a(srv.port, jt, A_JOBS, A_WARMUP), 90))
                results_a[(jt, sync)] = summarize_a(rows)
            srv.stop()
        if "b" in args.scenarios:
            srv = Server(binary, workdir, cfg, "full", "b")
            servers.append(srv)
            srv.start()
            budget = SCRIPT_BUDGET_S - (time.monotonic() - t_script)
            print(f"B: {B_CLIENTS} SSE clients, {budget:.0f} s left ...", file=sys.stderr)
            res_b = asyncio.run(asyncio.wait_for(scenario_b(srv, budget), budget - 10))
    except BaseException as e:  # noqa: BLE001 - report what we have
        error = f"{type(e).__name__}: {e}"
        print(f"ERROR: {error}", file=sys.stderr)
    finally:
        signal.alarm(0)
        for s in servers:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                print(f"stop {s.tag}: {e!r}", file=sys.stderr)

    uptime_after = sh("uptime")
    total = time.monotonic() - t_script

    # ------------------------------------------------------------------ report
    L = []
    L.append("# Spool event-stream benchmark (`Benchmarks/events_bench.py`)\n")
    L.append(f"- command: `{cmdline}`")
    L.append(f"- machine: nproc {machine['nproc']}, kernel {machine['uname']}, CPU{machine['cpu'] and ' ' + machine['cpu']}, "
             f"Python {machine['python']}; date {machine['date']}")
    L.append(f"- binary: `{binary}` (built {machine['spool_mtime']})" + (f" — **{stale}**" if stale else ""))
    L.append(f"- load before: `{uptime_before}` (waited {waited:.0f} s for 1-min load < 1.5; "
             f"{'reached' if la < 1.5 else 'NOT reached, ran anyway'})")
    L.append(f"- load after: `{uptime_after}`")
    L.append(f"- data dirs under `{workdir}` on {machine['fs']}")
    L.append(f"- total run time {total:.0f} s; fd limit {nofile[0]}; one slot, `--gpus none`, loopback only")
    L.append("- client: asyncio streams, raw HTTP/1.1 + SSE (chunked), same machine — it shares the cores with the server")
    if error:
        L.append(f"\n**RUN INCOMPLETE: {error}**")

    L.append("\n## A — submit → `succeeded` seen on an open `GET /v1/events` stream\n")
    L.append(f"{A_JOBS} jobs in a row per row (after {A_WARMUP} warm-up jobs); t0 before writing `POST /v1/jobs` "
             "(keep-alive), t1 when the SSE read that carried the job's `succeeded` state event returned. "
             "Breakdown columns (medians) come from the events' server-side `at` stamps: "
             "*queued* = t0 → queued commit stamp, *dispatch* = queued → running, *run* = running → succeeded "
             "(spawn/exec/exit or worker round trip, incl. its commit), *deliver* = succeeded stamp → client read (includes what the server does after taking the stamp: the commit and the fan-out).\n")
    L.append("| job type | sqlite synchronous | median ms | p90 ms | p99 ms | POST ack median ms | queued | dispatch | run | deliver | target median ≤ 1 ms |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for (jt, sync), s in results_a.items():
        lat = s["lat"]
        def med(k):
            return ms(s[k][0]) if k in s else "–"
        verdict = "PASS" if lat[0] <= 0.001 else "MISS"
        L.append(f"| `{jt}` | {sync} | {ms(lat[0])} | {ms(lat[1])} | {ms(lat[2])} | {med('ack')} | {med('commit_queued')} | "
                 f"{med('dispatch')} | {med('run')} | {med('deliver')} | **{verdict}** |")
    if results_a:
        L.append("")
        try:
            def m(jt, sync, k):
                return results_a[(jt, sync)][k][0]
            full_w, norm_w = m('noop-worker', 'full', 'lat'), m('noop-worker', 'normal', 'lat')
            full_p, norm_p = m('noop', 'full', 'lat'), m('noop', 'normal', 'lat')
            d_p, d_w = full_p - norm_p, full_w - norm_w
            sync_txt = ("no measurable difference (within run-to-run noise, |Δ| < 0.5 ms): on this disk the fsyncs "
                        "of `full` are not what dominates"
                        if abs(d_p) < 0.5 and abs(d_w) < 0.5 else
                        f"a difference of {ms(d_p)} ms (`noop`) and {ms(d_w)} ms (`noop-worker`) — positive means "
                        "the durable fsyncs cost that much; negative means noise larger than the fsync cost")
            L.append(f"What dominates: for `noop` (process mode) the *run* segment — spawn of `/bin/true`, its exit "
                     f"and reaping, and the commit — is {ms(m('noop', 'full', 'run'))} ms of the {ms(full_p)} ms median; "
                     f"for the warm `noop-worker` it is {ms(m('noop-worker', 'full', 'run'))} ms of {ms(full_w)} ms "
                     f"(FIFO round trip to a Python worker + commit), and the rest is spread over the submit ack "
                     f"({ms(m('noop', 'full', 'ack'))} / {ms(m('noop-worker', 'full', 'ack'))} ms), dispatch and "
                     f"delivery to the SSE reader (each ≈ 0.5–1.5 ms). `synchronous=normal` gives medians of "
                     f"{ms(norm_p)} ms and {ms(norm_w)} ms: {sync_txt}. So no single segment explains the miss: "
                     f"even with the job itself taking zero time, 3 state transitions each committed and fanned out "
                     f"plus an HTTP round trip add up to several ms on this 2-core machine.")
        except KeyError:
            pass

    L.append(f"\n## B — {B_CLIENTS} concurrent SSE clients while jobs run\n")
    if res_b:
        b = res_b
        ld = b["load"]
        L.append(f"{B_CLIENTS} connections to `GET /v1/events` from one asyncio process (each reads and parses every frame; "
                 f"every 25th also parses the JSON to time delivery). A separate client process submits `noop-worker` jobs at "
                 f"{B_RATE:.0f}/s for {B_DURATION:.0f} s on one keep-alive connection and sends {B_PROBES} "
                 f"`GET /v1/jobs/{{id}}` (newest job) evenly over the same time on another.\n")
        L.append(f"- connected: {b['connected']}/{B_CLIENTS} in {b['connect_s']:.2f} s"
                 + (f"; errors: {b['connect_errors']}" if b['connect_errors'] else ""))
        L.append(f"- jobs submitted: {ld['submitted']} in {ld['elapsed_s']:.1f} s ({ld['submitted'] / ld['elapsed_s']:.1f}/s), "
                 f"submit errors: {len(ld['submit_errors'])}; submit latency p50 {ms(pct(ld['submit_lat'], 50))} ms, "
                 f"p99 {ms(pct(ld['submit_lat'], 99))} ms")
        rows = [("with 500 SSE clients", ld, B_DURATION)]
        if "baseline" in b:
            rows.insert(0, ("no SSE clients (baseline)", b["baseline"], b["baseline_dur"]))
        L.append("\n| `GET /v1/jobs/{id}` | requests | p50 ms | p90 ms | p99 ms | max ms | statuses |")
        L.append("|---|---|---|---|---|---|---|")
        for name, d, _ in rows:
            lat = d["probe_lat"]
            L.append(f"| {name} | {len(lat)} | {ms(pct(lat, 50))} | {ms(pct(lat, 90))} | {ms(pct(lat, 99))} | "
                     f"{ms(max(lat))} | {d['probe_codes']} |")
        L.append("\n| server RSS (VmRSS) | MiB |")
        L.append("|---|---|")
        for k, name in (("rss_before", "before the SSE clients connect"), ("rss_500", "with 500 connected, idle"),
                        ("rss_peak", "peak while jobs ran (0.5 s samples)"), ("rss_end", "at the end (500 still connected)")):
            L.append(f"| {name} | {b[k] / 1024:.1f} |")
        L.append("\nRSS while jobs ran, MiB, every 0.5 s: " + " ".join(f"{x / 1024:.0f}" for x in b["rss_samples"]))
        counts = b["counts"]
        uniform = len(set(counts)) == 1
        complete = uniform and counts and counts[0] == b["expected_state"] and not b["out_of_order"]
        L.append(f"\n- `state` events per client: min {min(counts) if counts else '–'}, max {max(counts) if counts else '–'}, "
                 f"expected {b['expected_state']} (3 per job: queued, running, succeeded) → "
                 f"**{'all equal and complete — none lost, none stalled' if complete else ('all equal' if uniform else 'NOT all equal')}**; "
                 f"distinct last event ids {b['last_ids']}; ids not above the one before: {b['out_of_order']}; "
                 f"streams closed by the server: {b['closed']}; "
                 f"client errors: {b['client_errors'] or 'none'}")
        L.append(f"- drain after the last submit: {b['drain_s']:.2f} s until every client had all events (includes a 1 s settle)")
        lags = b["lags"]
        if lags:
            L.append(f"- delivery lag (event `at` stamp → client read, {len(lags)} state events on {b['lag_clients']} sampled "
                     f"clients): p50 {ms(pct(lags, 50))} ms, p90 {ms(pct(lags, 90))} ms, p99 {ms(pct(lags, 99))} ms, "
                     f"max {ms(max(lags))} ms (includes the single-threaded Python reader "
                     f"working through 500 sockets; it used {b['cpu_sse_client']:.1f} s of CPU in the loaded phase, so compare "
                     f"with the server's {b['cpu_srv']:.1f} s to see which side was busy)")
        L.append(f"- CPU during the loaded phase: server {b['cpu_srv']:.1f} s, SSE client process {b['cpu_sse_client']:.1f} s, "
                 f"load/probe process {ld['cpu_s']:.1f} s (2 cores shared by all three)")
    else:
        L.append("not run (see error above)")
    report = "\n".join(L) + "\n"
    print(report)
    Path(args.output).write_text(report)
    print(f"written to {args.output}", file=sys.stderr)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
