"""`download()` resuming with Range against the real server (sync and async clients).

The server's side of it — 206 with Content-Range for `Range: bytes=N-`, a validator (ETag or
Last-Modified) honoured in `If-Range`, 416 past the end — is probed first; a server without
Range support on outputs skips these tests, naming that missing feature. (Against one that
ignores Range, `test_jobs.test_outputs_and_download` still shows the client fetching the whole
file instead.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, List, Optional, Tuple

import httpx
import pytest

from spool_client import Client

from conftest import SpoolServer

SIZE = 2_000_000 + 77


class CutStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A real response body that breaks (httpx.ReadError) after `after` bytes."""

    def __init__(self, inner: Any, after: int) -> None:
        self.inner = inner
        self.after = after

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            if sent + len(chunk) >= self.after:
                yield chunk[: self.after - sent]
                raise httpx.ReadError("connection cut by the test")
            sent += len(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self.inner:
            if sent + len(chunk) >= self.after:
                yield chunk[: self.after - sent]
                raise httpx.ReadError("connection cut by the test")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


class Recording(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """httpx's own transports, recording each download request and its status, and cutting the
    bodies of the first responses after the given byte counts."""

    def __init__(self, cuts: Optional[List[int]] = None) -> None:
        self.cuts = list(cuts or [])
        self.exchanges: List[Tuple[httpx.Request, httpx.Response]] = []
        self._sync = httpx.HTTPTransport()
        self._async = httpx.AsyncHTTPTransport()

    def _note(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if "/outputs/" not in request.url.path:
            return response
        self.exchanges.append((request, response))
        if self.cuts and response.status_code in (200, 206):
            stream = CutStream(response.stream, self.cuts.pop(0))
            return httpx.Response(response.status_code, headers=response.headers, stream=stream, extensions=response.extensions)
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._note(request, self._sync.handle_request(request))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._note(request, await self._async.handle_async_request(request))

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()

    def summary(self) -> List[Tuple[Optional[str], Optional[str], int]]:
        return [(q.headers.get("Range"), q.headers.get("If-Range"), r.status_code) for q, r in self.exchanges]


@pytest.fixture(scope="module")
def blob(server: SpoolServer) -> Tuple[str, bytes]:
    """A finished job with a 2 MB output, `blob.bin`; skips when the server cannot serve ranges."""
    with Client(server.url) as spool:
        job = spool.submit("files", {"bytes": SIZE})
        assert spool.wait(job.id, timeout=15).succeeded
    data = (server.data_dir / "jobs" / job.id / "outputs" / "blob.bin").read_bytes()
    path = f"/v1/jobs/{job.id}/outputs/blob.bin"
    url = server.url + path
    probe = httpx.get(url, headers={"Range": "bytes=10-", "Accept-Encoding": "identity"}, timeout=10)
    if probe.status_code != 206:
        pytest.skip(
            f"server feature missing: Range requests on job outputs (GET {path} with 'Range: bytes=10-' "
            f"answered {probe.status_code}, not 206 Partial Content)"
        )
    assert probe.headers["content-range"] == f"bytes 10-{SIZE - 1}/{SIZE}" and probe.content == data[10:]
    return job.id, data


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_server_range_semantics(server: SpoolServer, blob: Tuple[str, bytes]) -> None:
    """What the client relies on: a validator, If-Range, 416 past the end."""
    job_id, data = blob
    url = f"{server.url}/v1/jobs/{job_id}/outputs/blob.bin"
    whole = httpx.get(url, timeout=10)
    assert whole.status_code == 200 and whole.headers.get("accept-ranges") == "bytes"
    validator = whole.headers.get("etag") or whole.headers.get("last-modified")
    assert validator, "a Range server should send a validator (ETag or Last-Modified) for If-Range"
    same = httpx.get(url, headers={"Range": "bytes=100-", "If-Range": validator}, timeout=10)
    assert same.status_code == 206 and same.content == data[100:]
    stale = httpx.get(url, headers={"Range": "bytes=100-", "If-Range": '"not-this-file"'}, timeout=10)
    assert stale.status_code == 200 and stale.content == data  # a stale validator: the whole file
    past = httpx.get(url, headers={"Range": f"bytes={SIZE}-"}, timeout=10)
    assert past.status_code == 416 and past.headers.get("content-range") == f"bytes */{SIZE}"


def test_download_resumes_a_part_file(make_api: Callable[..., Any], server: SpoolServer, blob: Tuple[str, bytes], tmp_path: Path) -> None:
    job_id, data = blob
    target = tmp_path / "blob.bin"
    Path(f"{target}.part").write_bytes(data[:1_000_000])
    transport = Recording()
    api = make_api(server.url, transport=transport)
    assert api.download(job_id, "blob.bin", target) == target
    assert digest(target.read_bytes()) == digest(data) and not Path(f"{target}.part").exists()
    assert transport.summary() == [("bytes=1000000-", None, 206)]  # only the rest came over the wire


def test_download_resumes_after_a_dropped_connection(make_api: Callable[..., Any], server: SpoolServer, blob: Tuple[str, bytes], tmp_path: Path) -> None:
    job_id, data = blob
    transport = Recording(cuts=[700_000, 500_000])
    api = make_api(server.url, transport=transport, sleep=lambda seconds: None)
    target = api.download(job_id, "blob.bin", tmp_path)
    assert target == tmp_path / "blob.bin" and digest(target.read_bytes()) == digest(data)
    first = transport.exchanges[0][1].headers
    validator = first.get("etag") if not first.get("etag", "").startswith("W/") else None
    validator = validator or first.get("last-modified")
    assert transport.summary() == [
        (None, None, 200),
        ("bytes=700000-", validator, 206),
        ("bytes=1200000-", validator, 206),
    ]


def test_a_part_of_another_file_is_not_resumed(make_api: Callable[..., Any], server: SpoolServer, blob: Tuple[str, bytes], tmp_path: Path) -> None:
    """A part the client left from another job's output of the same name starts over: its bytes
    are never joined to this file's (found by attacking the build: 400 kB of one file, then the
    rest of another)."""
    job_id, data = blob
    target = tmp_path / "blob.bin"
    Path(f"{target}.part").write_bytes(b"x" * 400_000)
    Path(f"{target}.part.source").write_text("/v1/jobs/job_00000000000000000000000000/outputs/blob.bin\n\"other\"")
    transport = Recording()
    make_api(server.url, transport=transport).download(job_id, "blob.bin", target)
    assert digest(target.read_bytes()) == digest(data)
    assert transport.summary() == [(None, None, 200)]  # the whole file, no Range
    assert not Path(f"{target}.part").exists() and not Path(f"{target}.part.source").exists()


def test_download_of_a_complete_part_file(make_api: Callable[..., Any], server: SpoolServer, blob: Tuple[str, bytes], tmp_path: Path) -> None:
    job_id, data = blob
    target = tmp_path / "blob.bin"
    Path(f"{target}.part").write_bytes(data)
    transport = Recording()
    make_api(server.url, transport=transport).download(job_id, "blob.bin", target)
    assert digest(target.read_bytes()) == digest(data)
    assert transport.summary() == [(f"bytes={SIZE}-", None, 416)]  # nothing left to fetch
