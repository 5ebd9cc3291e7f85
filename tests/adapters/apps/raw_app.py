"""A plain ASGI app for the edge cases: failures before and after the response starts, odd
headers, refusals of WebSockets. What the app saw is appended to ``observed``."""

from __future__ import annotations

from typing import Any

import anyio

from hyco_adapters.asgi import ClientDisconnected, Receive, Scope, Send

__all__ = ["SECRET", "app", "observed", "release"]

SECRET = "the database password is hunter2"

observed: list[Any] = []
# Set by a test before it calls /slow, which answers once it is set.
release: anyio.Event | None = None


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        raise RuntimeError("this app has no lifespan")
    route = scope["path"].removeprefix(scope["root_path"])
    if route.startswith("/scope/"):
        route = "/scope"
    if scope["type"] == "websocket":
        await _WEBSOCKET_ROUTES[route](scope, receive, send)
    else:
        await _HTTP_ROUTES[route](scope, receive, send)


async def _text(send: Send, text: str, status: int = 200) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _scope(scope: Scope, receive: Receive, send: Send) -> None:
    observed.append(dict(scope))
    await _text(send, "seen")


async def _raise_before(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError(SECRET)


async def _raise_after(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * 100_000, "more_body": True})
    raise RuntimeError(SECRET)


async def _no_response(scope: Scope, receive: Receive, send: Send) -> None:
    return


async def _unfinished(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-length", b"10")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello", "more_body": True})


async def _headers(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [
        (b"Content-Type", b"text/plain"),
        (b"X-Multi", b"a"),
        (b"x-multi", b"b"),
        (b"set-cookie", b"first=1; Path=/"),
        (b"set-cookie", b"second=2; Path=/"),
        (b"content-length", b"2"),
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
    ]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def _pieces(scope: Scope, receive: Receive, send: Send) -> None:
    """Declares a length, then sends a body of ``size`` bytes in pieces (query: length,size)."""
    declared, size = (int(number) for number in scope["query_string"].decode().split(","))
    headers = [(b"content-length", str(declared).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    half = size // 2
    await send({"type": "http.response.body", "body": b"a" * half, "more_body": True})
    await send({"type": "http.response.body", "body": b"b" * (size - half), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _no_content(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204})
    await send({"type": "http.response.body", "body": b"ignored"})


async def _disconnect(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message["body"]
        if not message["more_body"]:
            break
    await _text(send, f"{len(body)} bytes")
    observed.append((await receive())["type"])


async def _unread_body(scope: Scope, receive: Receive, send: Send) -> None:
    await _text(send, "not reading that", status=413)
    observed.append((await receive())["type"])


async def _slow(scope: Scope, receive: Receive, send: Send) -> None:
    observed.append("slow started")
    assert release is not None
    await release.wait()
    await _text(send, "finished")


async def _bad_header(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"bad header", b"x")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _bad_status(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": "200"})


_HTTP_ROUTES = {
    "/scope": _scope,
    "/raise-before": _raise_before,
    "/raise-after": _raise_after,
    "/no-response": _no_response,
    "/unfinished": _unfinished,
    "/headers": _headers,
    "/pieces": _pieces,
    "/no-content": _no_content,
    "/disconnect": _disconnect,
    "/unread-body": _unread_body,
    "/slow": _slow,
    "/bad-header": _bad_header,
    "/bad-status": _bad_status,
}


async def _close_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.close", "code": 1008, "reason": "Not you"})


async def _deny(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": b"log in", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b" first"})


async def _raise_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    raise RuntimeError(SECRET)


async def _raise_after_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    observed.append(await receive())
    raise RuntimeError(SECRET)


async def _wrong_subprotocol(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept", "subprotocol": "never-offered"})


async def _return_without_accepting(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept", "headers": [(b"x-ignored", b"yes")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            observed.append(message)
            try:
                await send({"type": "websocket.send", "text": "too late"})
            except ClientDisconnected as error:
                observed.append(error)
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4001, "reason": "custom"})
            observed.append(await receive())
            return
        await send(
            {"type": "websocket.send", **{k: message[k] for k in ("text", "bytes") if k in message}}
        )


_WEBSOCKET_ROUTES = {
    "/ws/close-before-accept": _close_before_accept,
    "/ws/deny": _deny,
    "/ws/raise-before-accept": _raise_before_accept,
    "/ws/raise-after-accept": _raise_after_accept,
    "/ws/wrong-subprotocol": _wrong_subprotocol,
    "/ws/return-without-accepting": _return_without_accepting,
    "/ws/echo": _echo,
}
