"""A Flask app written as people write them, with nothing relay-specific in it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, request, url_for

__all__ = ["CHUNK", "SECRET", "app", "closed"]

CHUNK = bytes(range(256)) * 256  # 64 KiB
SECRET = "the database password is hunter2"

# The paths of the streamed responses whose generators were closed.
closed: list[str] = []

app = Flask(__name__)


@app.get("/items/<int:item_id>")
def read_item(item_id: int) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "q": request.args.get("q"),
        "script_name": request.script_root,
        "path": request.path,
        "url": request.url,
        "url_for": url_for("read_item", item_id=item_id, _external=True),
        "host": request.host,
        "remote_addr": request.remote_addr,
        "multithread": request.environ["wsgi.multithread"],
    }


@app.post("/echo")
def echo() -> Response:
    return Response(
        request.get_data(),
        content_type=request.content_type,
        headers={"X-Content-Length": str(request.content_length)},
    )


@app.get("/stream")
def stream() -> Response:
    mib = int(request.args.get("mib", "4"))

    def chunks() -> Iterator[bytes]:
        try:
            for _ in range(mib * 16):
                yield CHUNK
        finally:
            closed.append("/stream")

    return Response(chunks(), mimetype="application/octet-stream")


@app.post("/sha256")
def sha256() -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    while piece := request.stream.read(10_000):
        digest.update(piece)
        size += len(piece)
    return {"sha256": digest.hexdigest(), "size": size}


@app.post("/lines")
def lines() -> dict[str, Any]:
    return {"lines": [line.decode() for line in request.stream]}


@app.get("/fail")
def fail() -> str:
    raise RuntimeError(SECRET)


@app.get("/fail-midway")
def fail_midway() -> Response:
    def chunks() -> Iterator[bytes]:
        yield CHUNK
        yield CHUNK
        raise RuntimeError(SECRET)

    return Response(chunks(), mimetype="application/octet-stream")


@app.get("/cookies/set")
def set_cookie() -> Response:
    response = Response("set")
    response.set_cookie("session", "abc123", httponly=True)
    return response


@app.get("/cookies/two")
def set_two_cookies() -> Response:
    response = Response("two")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2")
    return response


@app.get("/cookies/read")
def read_cookie() -> dict[str, Any]:
    return {"session": request.cookies.get("session")}
