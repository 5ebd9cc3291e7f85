"""A long-running command's metrics and health over HTTP (``--metrics-addr``): ``/metrics`` in
the Prometheus text format, ``/healthz`` and ``/readyz``.

Everything lives in a :class:`Metrics` of the command's own, in a registry of its own (never
``prometheus_client``'s global one), so that tests and programs embedding several commands do
not mix their figures. Its figures come from three places:

- the command's :class:`~hyco_adapters.vitals.Vitals`, read at each scrape: readiness, each part
  up or down, each listener online or not;
- each listener's :class:`~hyco_core.ListenerObserver` (:meth:`Metrics.observe`), counting
  senders, HTTP answers, bytes and reconnections as they happen;
- the relay's :meth:`~hyco_relay.registry.Registry.counts`, read at each scrape, for ``hyco
  relay``.

The server is a small threaded one (a thread per client, each dropped after
:data:`CLIENT_TIMEOUT` seconds without a request), so that it serves alike whatever the
command's own concurrency: an event loop, threads, or greenlets.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hyco_core import HycoError, ListenerObserver, ListenerStatus, Traffic

from ._cli_errors import bind_failure
from .vitals import Vitals

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from hyco_relay.registry import RelayCounts

__all__ = ["CLIENT_TIMEOUT", "Metrics", "MetricsAddressError", "serve_metrics"]

logger = logging.getLogger("hyco.adapters.metrics")

CLIENT_TIMEOUT = 10.0
"""Seconds the metrics server waits on a client's request before it drops the connection."""

MAX_CLIENTS = 64
"""Clients the metrics server serves at once, a thread each; one more is closed at once, so
that a flood of connections cannot grow the process's threads without bound."""

_TRAFFIC: tuple[Traffic, ...] = ("websocket", "http")


class MetricsAddressError(HycoError):
    """The metrics server cannot listen on the address ``--metrics-addr`` gave."""


class Metrics:
    """The metrics of one command: its vitals, its listeners' observations and, when it runs
    one, its relay's figures."""

    def __init__(self, vitals: Vitals) -> None:
        self.vitals = vitals
        self.registry = CollectorRegistry()
        self.registry.register(_VitalsCollector(vitals))
        hybrid_connection = ["hybrid_connection"]
        self._connections = Counter(
            "hyco_listener_connections",
            "Senders' WebSocket connections by outcome: accepted, rejected (with the status "
            "sent), or failed (the rendezvous could not be completed).",
            [*hybrid_connection, "outcome", "status"],
            registry=self.registry,
        )
        self._requests = Counter(
            "hyco_listener_http_requests",
            "HTTP requests answered in full, by the status of the answer.",
            [*hybrid_connection, "status"],
            registry=self.registry,
        )
        self._received = Counter(
            "hyco_listener_received_bytes",
            "Bytes received from senders: WebSocket message payloads, HTTP request bodies.",
            [*hybrid_connection, "kind"],
            registry=self.registry,
        )
        self._sent = Counter(
            "hyco_listener_sent_bytes",
            "Bytes sent to senders: WebSocket message payloads, HTTP response bodies.",
            [*hybrid_connection, "kind"],
            registry=self.registry,
        )
        self._reconnects = Counter(
            "hyco_listener_reconnects",
            "Times the listener went offline and connected again, by the error type that took "
            "it offline.",
            [*hybrid_connection, "reason"],
            registry=self.registry,
        )
        self._accept_seconds = Histogram(
            "hyco_listener_accept_duration_seconds",
            "From the relay's offer of a sender to the accepted rendezvous being open, the "
            "accept handler's decision included.",
            hybrid_connection,
            registry=self.registry,
        )
        self._request_seconds = Histogram(
            "hyco_listener_http_request_duration_seconds",
            "From an HTTP request's arrival at the listener to the last byte of its answer "
            "written (on the control channel or a rendezvous).",
            hybrid_connection,
            registry=self.registry,
        )
        self._exposition = make_wsgi_app(self.registry)

    def observe(self, hybrid_connection: str) -> ListenerObserver:
        """The observer to give the listener on ``hybrid_connection``."""
        return _Observer(self, hybrid_connection)

    def count_relay(self, counts: Callable[[], RelayCounts]) -> None:
        """Report the relay whose figures ``counts`` reads, at each scrape."""
        self.registry.register(_RelayCollector(counts))

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI app of ``/metrics``, ``/healthz`` and ``/readyz``."""
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", b"GET or HEAD only\n")
        if path == "/metrics":
            answer: Iterable[bytes] = self._exposition(environ, start_response)
            return answer
        if path == "/healthz":
            return _answer(start_response, "200 OK", b"ok\n")
        if path == "/readyz":
            ready = self.vitals.ready
            parts = self.vitals.parts()
            document = {
                "ready": ready,
                "parts": {name: "up" if up else "down" for name, up in parts.items()},
                "down": sorted(name for name, up in parts.items() if not up),
            }
            body = json.dumps(document).encode() + b"\n"
            status = "200 OK" if ready else "503 Service Unavailable"
            return _answer(start_response, status, body, "application/json")
        return _answer(start_response, "404 Not Found", b"/metrics, /healthz or /readyz\n")


def _answer(
    start_response: StartResponse, status: str, body: bytes, kind: str = "text/plain"
) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


class _Observer(ListenerObserver):
    """One listener's observations, on the label values of its hybrid connection (bound once:
    an observation is then a counter's increment)."""

    def __init__(self, metrics: Metrics, hybrid_connection: str) -> None:
        self._name = hybrid_connection
        self._connections = metrics._connections
        self._requests = metrics._requests
        self._reconnects = metrics._reconnects
        self._accepted = metrics._connections.labels(hybrid_connection, "accepted", "")
        self._failed = metrics._connections.labels(hybrid_connection, "failed", "")
        self._accept_seconds = metrics._accept_seconds.labels(hybrid_connection)
        self._request_seconds = metrics._request_seconds.labels(hybrid_connection)
        self._received = {
            kind: metrics._received.labels(hybrid_connection, kind) for kind in _TRAFFIC
        }
        self._sent = {kind: metrics._sent.labels(hybrid_connection, kind) for kind in _TRAFFIC}

    def sender_accepted(self, waited: float) -> None:
        self._accepted.inc()
        self._accept_seconds.observe(waited)

    def sender_rejected(self, status: int) -> None:
        self._connections.labels(self._name, "rejected", str(status)).inc()

    def sender_failed(self, error: HycoError) -> None:
        self._failed.inc()

    def request_answered(self, status: int, took: float) -> None:
        self._requests.labels(self._name, str(status)).inc()
        self._request_seconds.observe(took)

    def received(self, traffic: Traffic, size: int) -> None:
        self._received[traffic].inc(size)

    def sent(self, traffic: Traffic, size: int) -> None:
        self._sent[traffic].inc(size)

    def reconnecting(self, error: HycoError) -> None:
        self._reconnects.labels(self._name, type(error).__name__).inc()


class _VitalsCollector(Collector):
    """Readiness, each part and each listener's status, as the vitals hold them now."""

    def __init__(self, vitals: Vitals) -> None:
        self._vitals = vitals

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "hyco_ready", "1 while every part of the command is up (as /readyz answers 200)."
        )
        ready.add_metric([], 1.0 if self._vitals.ready else 0.0)
        yield ready
        up = GaugeMetricFamily(
            "hyco_part_up", "Each part of the command: 1 up, 0 down.", labels=["part"]
        )
        for name, is_up in sorted(self._vitals.parts().items()):
            up.add_metric([name], 1.0 if is_up else 0.0)
        yield up
        online = GaugeMetricFamily(
            "hyco_listener_online",
            "Each listener: 1 while online, 0 while connecting, offline or closed.",
            labels=["hybrid_connection"],
        )
        for name, status in sorted(self._vitals.listener_statuses().items()):
            online.add_metric([name], 1.0 if status is ListenerStatus.ONLINE else 0.0)
        yield online


class _RelayCollector(Collector):
    """The relay's figures, read from it at each scrape."""

    def __init__(self, counts: Callable[[], RelayCounts]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        labels = ["namespace", "hybrid_connection"]
        listeners = GaugeMetricFamily(
            "hyco_relay_listeners", "Listeners connected now.", labels=labels
        )
        senders = GaugeMetricFamily(
            "hyco_relay_senders", "Relayed WebSocket connections open now.", labels=labels
        )
        pending = GaugeMetricFamily(
            "hyco_relay_pending_rendezvous",
            "Senders waiting now for a listener to open their rendezvous.",
            labels=labels,
        )
        connections = CounterMetricFamily(
            "hyco_relay_connections", "WebSocket connections relayed.", labels=labels
        )
        requests = CounterMetricFamily(
            "hyco_relay_http_requests", "HTTP requests forwarded to listeners.", labels=labels
        )
        relayed = CounterMetricFamily(
            "hyco_relay_relayed_bytes",
            "Bytes relayed (WebSocket message payloads and HTTP bodies), by direction.",
            labels=[*labels, "direction"],
        )
        for entity in counts.entities:
            names = [entity.namespace, entity.entity]
            stats = entity.stats
            listeners.add_metric(names, entity.listeners)
            senders.add_metric(names, stats.senders)
            pending.add_metric(names, entity.pending_rendezvous)
            connections.add_metric(names, stats.connections)
            requests.add_metric(names, stats.requests)
            relayed.add_metric([*names, "to_listener"], stats.bytes_in)
            relayed.add_metric([*names, "to_sender"], stats.bytes_out)
        refusals = CounterMetricFamily(
            "hyco_relay_refusals",
            "Error answers the relay gave, by status (410 confirms a rejection delivered).",
            labels=["status"],
        )
        for status, count in sorted(counts.refusals.items()):
            refusals.add_metric([str(status)], count)
        yield from (listeners, senders, pending, connections, requests, relayed, refusals)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:
        # Not HTTPServer's, which looks the host's name up (slow, or hanging, without DNS).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            logger.debug(
                "metrics client %s: %d served already, closed", client_address[0], MAX_CLIENTS
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes quiet or drops mid-request is the client's affair: a line at
        # debug level, not socketserver's traceback on stderr.
        logger.debug("metrics client %s: dropped", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics client %s: " + format, self.client_address[0], *args)


@contextmanager
def serve_metrics(metrics: Metrics, host: str, port: int) -> Iterator[tuple[str, int]]:
    """Serve ``metrics`` on ``host:port`` for the duration of the block; yields the address
    bound (its port picked when 0 was asked). Raises :class:`MetricsAddressError` when the
    address cannot be bound."""
    server_class = _Server6 if ":" in host else _Server
    try:
        server: WSGIServer = make_server(host, port, metrics.app, server_class, _Handler)
    except OSError as error:
        raise MetricsAddressError(bind_failure(host, port, error, "--metrics-addr")) from None
    thread = threading.Thread(target=server.serve_forever, name="hyco-metrics", daemon=True)
    thread.start()
    try:
        yield host, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
