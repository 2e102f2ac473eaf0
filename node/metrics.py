"""Prometheus metrics of one node, on their own registry (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = Counter("declora_rounds_total", "Completed rounds", registry=r)
        self.bytes_sent = Counter("declora_bytes_sent_total", "Payload bytes pushed", registry=r)
        self.bytes_received = Counter(
            "declora_bytes_received_total", "Payload bytes accepted", registry=r
        )
        self.rejected = Counter(
            "declora_rejected_total", "Messages refused, by reason", ["reason"], registry=r
        )
        self.neighbors = Gauge("declora_live_neighbors", "Neighbours in the live set", registry=r)
        self.loss = Gauge("declora_train_loss", "Mean training loss of the last round", registry=r)
        self.accuracy = Gauge("declora_eval_accuracy", "Last evaluation accuracy", registry=r)
        self.round = Gauge("declora_round", "Current round", registry=r)
        self.round_seconds = Histogram(
            "declora_round_seconds",
            "Wall time of a round",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
