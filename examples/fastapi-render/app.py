"""Render API: a FastAPI app that hands its renders to Spool instead of running them itself.

    SPOOL_URL=http://127.0.0.1:8080 uvicorn app:app --port 8000     # then open http://127.0.0.1:8000/

POST /renders answers 201 with the job as soon as Spool has stored it; the render runs in Spool's
worker, never in this process, so the event loop stays free. Status, progress and the image come
from Spool:

    POST /renders                 {"width", "height", "samples", "seed"?} → 201 + Location, the render
    GET  /renders/{id}            the render (?wait=S holds until its state changes, ≤ 60 s)
    GET  /renders/{id}/events     Server-Sent Events (Spool's stream for the job, passed through)
    GET  /renders/{id}/image      the PNG, once it has succeeded
    POST /renders/{id}/cancel     stop it
    GET  /                        a page that submits a render and follows it with EventSource

Configuration: SPOOL_URL (default http://127.0.0.1:8080), SPOOL_TOKEN (a token from
`spool token create`, when the server has tokens; the browser never sees it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Union

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

import spool_client
from spool_client import AsyncClient, Event, Job

HERE = Path(__file__).resolve().parent
KEEP_ALIVE_S = 15.0


class RenderRequest(BaseModel):
    width: int = Field(320, ge=1, le=4096)
    height: int = Field(240, ge=1, le=4096)
    samples: int = Field(16, ge=1, le=10000)
    seed: Optional[int] = None


def render_view(job: Job) -> Dict[str, Any]:
    """What this API says about a render: the parts of Spool's job a client of ours needs."""
    base = f"/renders/{job.id}"
    view: Dict[str, Any] = {
        "id": job.id,
        "state": job.state,
        "position": job.position,
        "progress": None if job.progress is None else {"fraction": job.progress.fraction, "message": job.progress.message},
        "error": job.error,
        "created_at": job.raw.get("created_at"),
        "finished_at": job.raw.get("finished_at"),
        "links": {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
    }
    if job.succeeded:
        view["links"]["image"] = f"{base}/image"
    return view


def sse_frame(event: Event) -> str:
    lines = [f"id: {event.id}"] if event.id is not None else []
    lines.append(f"event: {event.event}")
    lines += [f"data: {line}" for line in event.text.split("\n")]
    return "\n".join(lines) + "\n\n"


def create_app(spool_url: Optional[str] = None, token: Optional[str] = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for the whole app. Its pool has no cap on connections (the client's default):
        # each browser following a render holds one to Spool for as long as it watches.
        async with AsyncClient(spool_url or os.environ.get("SPOOL_URL"), token or os.environ.get("SPOOL_TOKEN")) as spool:
            app.state.spool = spool
            yield

    app = FastAPI(title="Render API (on Spool)", lifespan=lifespan)

    def spool_of(request: Request) -> AsyncClient:
        return request.app.state.spool  # type: ignore[no-any-return]

    @app.exception_handler(spool_client.SpoolError)
    async def spool_error(request: Request, error: spool_client.SpoolError) -> JSONResponse:
        """Spool's answers, translated: its 404, 409, 422 and 429 are ours too; the rest is a 502/503."""
        headers: Dict[str, str] = {}
        if error.retry_after is not None:
            headers["Retry-After"] = str(int(error.retry_after + 0.999))
        body: Dict[str, Any] = {"detail": error.detail or error.title}
        if isinstance(error, (spool_client.NotFound, spool_client.Conflict)):
            status = error.status or 409
        elif isinstance(error, spool_client.InvalidInput):
            status, body["errors"] = 422, error.errors
        elif isinstance(error, spool_client.RateLimited):
            status = 429
        elif isinstance(error, (spool_client.Unavailable, spool_client.ConnectionFailed)):
            status, body["detail"] = 503, f"the render service is unavailable: {error}"
        else:
            status, body["detail"] = 502, f"the render service answered: {error}"
        return JSONResponse(body, status_code=status, headers=headers)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse((HERE / "static" / "index.html").read_text(encoding="utf-8"))

    @app.post("/renders", status_code=201)
    async def submit(
        body: RenderRequest, request: Request, idempotency_key: Optional[str] = Header(None)
    ) -> JSONResponse:
        """Store the render in Spool's queue and answer at once (201): nothing runs here."""
        job = await spool_of(request).submit("render", body.model_dump(exclude_none=True), idempotency_key=idempotency_key)
        view = render_view(job)
        return JSONResponse(view, status_code=201, headers={"Location": view["links"]["self"]})

    @app.get("/renders/{render_id}")
    async def status(render_id: str, request: Request, wait: Optional[float] = Query(None, ge=0, le=60)) -> Dict[str, Any]:
        return render_view(await spool_of(request).get(render_id, wait=wait))

    @app.post("/renders/{render_id}/cancel")
    async def cancel(render_id: str, request: Request) -> Dict[str, Any]:
        return render_view(await spool_of(request).cancel(render_id))

    @app.get("/renders/{render_id}/image")
    async def image(render_id: str, request: Request) -> Response:
        spool = spool_of(request)
        job = await spool.get(render_id)
        if not job.succeeded:
            return JSONResponse({"detail": f"render {render_id} is {job.state}, it has no image"}, status_code=409)
        folder = tempfile.mkdtemp(prefix="render-")
        try:
            path = await spool.download(render_id, "render.png", Path(folder) / "render.png")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return FileResponse(path, media_type="image/png", background=BackgroundTask(shutil.rmtree, folder, True))

    @app.get("/renders/{render_id}/events")
    async def events(render_id: str, request: Request, last_event_id: Optional[str] = Header(None)) -> Response:
        """Spool's event stream for the render, passed through (with its ids, so a browser's
        EventSource resumes with Last-Event-ID). The stream ends after the final state and the
        outputs; a reconnection after that gets 204, which tells EventSource to stop."""
        spool = spool_of(request)
        job = await spool.get(render_id)  # an unknown id is a 404 before any stream starts
        replay: Optional[List[Event]] = None
        if job.done and last_event_id is not None:
            # Everything is written: replay the job's (finite) stream and send what comes after.
            after = int(last_event_id) if last_event_id.isdigit() else 0
            replay = [e async for e in spool.events(render_id) if e.id is None or not e.id.isdigit() or int(e.id) > after]
            if not replay:
                return Response(status_code=204)

        async def stream() -> AsyncIterator[str]:
            if replay is not None:
                for event in replay:
                    yield sse_frame(event)
                return
            queue: "asyncio.Queue[Union[Event, Exception, None]]" = asyncio.Queue(maxsize=256)

            async def pump() -> None:
                try:
                    async for event in spool.events(render_id, last_event_id=last_event_id):
                        await queue.put(event)
                except Exception as error:  # noqa: BLE001 — handed to the stream below
                    await queue.put(error)
                finally:
                    await queue.put(None)

            task = asyncio.create_task(pump())
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"  # idle proxies and browsers keep the connection
                        continue
                    if item is None:
                        return
                    if isinstance(item, Exception):
                        yield f"event: error\ndata: {json.dumps({'detail': str(item)})}\n\n"
                        return
                    yield sse_frame(item)
            finally:
                task.cancel()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return app


app = create_app()
