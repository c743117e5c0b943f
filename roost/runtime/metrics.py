"""Prometheus metrics of one roost process, on a registry of its own (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.actor_restarts = Counter(
            "roost_actor_restarts", "Restarts of an actor after a crash", ["actor"], registry=self.registry
        )
        self.actor_up = Gauge(
            "roost_actor_up", "1 while the actor is running, 0 otherwise", ["actor"], registry=self.registry
        )
        self.actor_ticks = Counter(
            "roost_actor_ticks", "Units of work an actor reported done", ["actor"], registry=self.registry
        )
        self.requests = Counter(
            "roost_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.request_latency = Histogram(
            "roost_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.connected_devices = Gauge(
            "roost_connected_sockets", "Open, authenticated device WebSockets", registry=self.registry
        )
        self.ws_frames_out = Counter(
            "roost_ws_frames_sent", "Frames sent to device sockets", ["type"], registry=self.registry
        )
        self.ws_closed_slow = Counter(
            "roost_ws_slow_consumers_closed", "Sockets closed because they could not keep up", registry=self.registry
        )
        self.loop_lag = Gauge(
            "roost_event_loop_lag_max_seconds",
            "Longest single task step seen (event loop stall)",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
