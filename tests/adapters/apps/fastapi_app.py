"""A FastAPI app written as people write them, with nothing relay-specific in it.

``events`` records the lifespan; with ``HYCO_TEST_LIFESPAN_LOG`` set, each event is also
appended to that file with the process id, so that tests can see what worker processes did.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

__all__ = ["CHUNK", "LIFESPAN_LOG", "app", "events", "stream_ends", "ws_disconnects"]

LIFESPAN_LOG = "HYCO_TEST_LIFESPAN_LOG"
CHUNK = bytes(range(256)) * 256  # 64 KiB

events: list[str] = []
ws_disconnects: list[tuple[int, str]] = []
stream_ends: list[str] = []


def _record(event: str) -> None:
    events.append(event)
    log = os.environ.get(LIFESPAN_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as file:
            file.write(f"{event} {os.getpid()}\n")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    _record("startup")
    yield {"greeting": "hello from the lifespan"}
    _record("shutdown")


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request, q: str | None = None) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "q": q,
        "root_path": request.scope["root_path"],
        "url": str(request.url),
        "url_for": str(request.url_for("read_item", item_id=item_id)),
        "greeting": request.state.greeting,
    }


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type=request.headers.get("content-type"))


@app.get("/stream")
async def stream(mib: int = 4) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(mib * 16):
            yield CHUNK

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.post("/sha256")
async def sha256(request: Request) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    async for piece in request.stream():
        digest.update(piece)
        size += len(piece)
    return {"sha256": digest.hexdigest(), "size": size}


@app.get("/pid")
async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.get("/cookies")
async def cookies() -> Response:
    response = PlainTextResponse("two cookies")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2")
    return response


@app.websocket("/ws")
async def websocket_echo(websocket: WebSocket) -> None:
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol="v2" if "v2" in offered else None)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            ws_disconnects.append((message["code"], message.get("reason", "")))
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await websocket.close(int(text.removeprefix("close:")), "bye")
            return
        if text is not None:
            await websocket.send_text(text)
        else:
            await websocket.send_bytes(message["bytes"])


@app.websocket("/ws/scope")
async def websocket_scope(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(
        {
            "path": websocket.scope["path"],
            "root_path": websocket.scope["root_path"],
            "query": websocket.scope["query_string"].decode(),
            "scheme": websocket.scope["scheme"],
            "url": str(websocket.url),
            "x_custom": websocket.headers.get("x-custom"),
        }
    )
    await websocket.close()


@app.post("/relay-body")
async def relay_body(request: Request) -> StreamingResponse:
    return StreamingResponse(request.stream(), media_type="application/octet-stream")


@app.get("/endless")
async def endless() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield CHUNK
        finally:
            stream_ends.append("stopped")

    return StreamingResponse(chunks(), media_type="application/octet-stream")
