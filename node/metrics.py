"""A node's Prometheus metrics: what its device does (tokens/s, step time, the optimizer's share
of it, GPU memory), what its jobs cost, and what it moves over the network. One registry per
node, served on `--metrics HOST:PORT`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class TrafficCollector:
    """The host's byte counters, read at each scrape."""

    def __init__(self, traffic: Callable[[], dict[str, int]]) -> None:
        self.traffic = traffic

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "eranos_node_network_bytes", "Bytes moved over p2p, by kind.", labels=["kind"]
        )
        for kind, count in sorted(self.traffic().items()):
            family.add_metric([kind], float(count))
        yield family


class ShardCollector:
    """The shard cache's counters (node/shard_store.py), read at each scrape."""

    def __init__(self, store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        stats = self.store.stats
        for name, help, value in (
            ("eranos_node_shards_fetched", "Shards fetched from data providers.", stats.fetched),
            ("eranos_node_shard_bytes_fetched", "Bytes of shards fetched.", stats.fetched_bytes),
            ("eranos_node_shards_evicted", "Shards deleted to keep the cache in its bound.", stats.evicted),
            ("eranos_node_shards_unavailable", "Shards no provider sent when asked.", stats.unavailable),
        ):
            yield CounterMetricFamily(name, help, value=float(value))
        yield GaugeMetricFamily(
            "eranos_node_shard_cache_bytes",
            "Bytes of shards in the cache.",
            value=float(self.store.cached_bytes),
        )


class NodeMetrics:
    def __init__(self, traffic: Callable[[], dict[str, int]], device: torch.device) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.tokens_per_second = Gauge(
            "eranos_node_tokens_per_second", "Tokens per second of the last round's training.", registry=r
        )
        self.step_seconds = Histogram(
            "eranos_node_step_seconds", "Seconds per optimizer step (forward, backward, compress).",
            buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.optimizer_share = Gauge(
            "eranos_node_optimizer_share_ratio", "Share of the last step spent compressing.", registry=r
        )
        self.job_seconds = Histogram(
            "eranos_node_job_seconds", "Seconds per job, by kind (train, validate, apply, sync).",
            ["kind"], buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.payload_bytes = Gauge("eranos_node_payload_bytes", "Bytes of the last payload sent.", registry=r)
        self.checks = Counter(
            "eranos_node_checks", "Replays of other members' rounds, by verdict.", ["verdict"], registry=r
        )
        self.compute_seconds = Counter(
            "eranos_node_compute_seconds", "Seconds of forward and backward on its own batches.", registry=r
        )
        self.compute_utilization = Gauge(
            "eranos_node_compute_utilization_ratio",
            "Share of wall time since its first batch spent on its own batches' forward and backward.",
            registry=r,
        )
        self._first_compute: float | None = None
        self._compute_total = 0.0
        self.eval_accuracy = Gauge(
            "eranos_node_eval_accuracy",
            "Share of the run's multiple-choice tasks answered right after the last evaluated round.",
            registry=r,
        )
        self.eval_loss = Gauge(
            "eranos_node_eval_loss", "Held-out loss after the last evaluated round.", registry=r
        )
        self.applied_round = Gauge(
            "eranos_node_applied_round", "The last round this node applied.", registry=r
        )
        r.register(TrafficCollector(traffic))
        if device.type == "cuda":
            gpu = Gauge("eranos_node_gpu_memory_bytes", "Peak GPU memory allocated by torch.", registry=r)
            gpu.set_function(lambda: float(torch.cuda.max_memory_allocated(device)))

    def trained(self, tokens: int, seconds: float, optimizer_seconds: float, payload_bytes: int) -> None:
        self.tokens_per_second.set(tokens / seconds if seconds > 0 else 0.0)
        self.step_seconds.observe(seconds)
        self.optimizer_share.set(optimizer_seconds / seconds if seconds > 0 else 0.0)
        self.payload_bytes.set(payload_bytes)

    def computed(self, seconds: float, now: float | None = None) -> None:
        """Forward and backward on its own batches took `seconds`, ending `now`."""
        now = time.monotonic() if now is None else now
        if self._first_compute is None:
            self._first_compute = now - seconds
        self.compute_seconds.inc(seconds)
        self._compute_total += seconds
        self.compute_utilization.set(self.utilization(now))

    def utilization(self, now: float | None = None) -> float:
        if self._first_compute is None:
            return 0.0
        wall = (time.monotonic() if now is None else now) - self._first_compute
        return min(1.0, self._compute_total / wall) if wall > 0 else 1.0

    def checked(self, accept: bool, available: bool) -> None:
        self.checks.labels("accept" if accept else "reject" if available else "unavailable").inc()

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0: any free port); the port it serves on."""
        server, _ = start_http_server(port, host, registry=self.registry)
        return server.server_port
