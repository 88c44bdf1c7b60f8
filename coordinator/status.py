"""The coordinator's HTTP server: the live dashboard at `/` (coordinator/dashboard.html, no build
step, no network), every figure it shows at `/status.json`, and Prometheus `/metrics`."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from coordinator.state import Phase

log = logging.getLogger("eranos.coordinator.http")
DASHBOARD = Path(__file__).with_name("dashboard.html")
GAUGES = (
    ("round", "eranos_round", "The round under way, or the next one."),
    ("step", "eranos_step", "Optimizer steps the run has taken."),
    ("members", "eranos_members", "Members the coordinator counts."),
    ("needed", "eranos_members_needed", "Members the run waits for before its next round."),
    ("ready_members", "eranos_ready_members", "Members holding the current model."),
    ("banned", "eranos_banned_members", "Members banned from the run."),
    ("loss", "eranos_loss", "Mean loss replayed by validators, last round."),
    ("self_reported_loss", "eranos_self_reported_loss", "Mean loss members reported, last round."),
    ("bytes_per_step", "eranos_payload_bytes", "Mean payload bytes per member per step."),
    (
        "utilization",
        "eranos_compute_utilization_ratio",
        "Members' mean share of wall time on their own batches (self-reported).",
    ),
    ("chain_pending", "eranos_chain_pending_rounds", "Finalized rounds not yet recorded on chain."),
)
COUNTERS = (
    ("finalized_rounds", "eranos_finalized_rounds", "Rounds finalized."),
    ("penalties", "eranos_penalties", "Penalties given."),
    ("accepted_batches", "eranos_accepted_batches", "Batches in accepted contributions."),
)
LABELLED = (
    ("event_outcomes", "eranos_machine_events", "outcome", "Events the round machine handled, by outcome."),
    ("removed", "eranos_removed_members", "reason", "Members removed from the run, by reason."),
    ("refused_joins", "eranos_refused_joins", "reason", "Joins refused, by reason."),
    ("checks", "eranos_checks", "result", "Validation results, by result."),
    ("rejected_messages", "eranos_rejected_messages", "reason", "Gossip messages refused, by reason."),
)


def label(value: object) -> str:
    """A label value in Prometheus style: lower case, words joined by underscores."""
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or "none"


class SnapshotCollector:
    """Metric families read from the coordinator's snapshot at each scrape."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        for key, name, text in GAUGES:
            if snap.get(key) is not None:
                yield GaugeMetricFamily(name, text, value=float(snap[key]))
        for key, name, text in COUNTERS:
            yield CounterMetricFamily(name, text, value=float(snap.get(key) or 0))
        for key, name, label_name, text in LABELLED:
            family = CounterMetricFamily(name, text, labels=[label_name])
            for value, count in sorted(snap.get(key, {}).items()):
                family.add_metric([label(value)], float(count))
            yield family
        phase = GaugeMetricFamily(
            "eranos_phase", "1 for the phase the run is in, 0 for the others.", labels=["phase"]
        )
        for p in Phase:
            phase.add_metric([p.value], 1.0 if snap.get("phase") == p.value else 0.0)
        yield phase
        spans = GaugeMetricFamily(
            "eranos_phase_seconds", "How long the last finished span of each phase took.", labels=["phase"]
        )
        for name, seconds in {span[1]: span[3] for span in snap.get("timeline", [])}.items():
            spans.add_metric([name], float(seconds))
        yield spans
        failing = bool(snap.get("chain_last_error")) and snap.get("chain_cleared_at") is None
        yield GaugeMetricFamily(
            "eranos_chain_failing", "1 while recording on chain fails.", value=float(failing)
        )


def metrics_registry(snapshot: Callable[[], dict]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


class StatusServer:
    def __init__(self, snapshot: Callable[[], dict], host: str = "127.0.0.1", port: int = 0) -> None:
        registry = metrics_registry(snapshot)
        dashboard = DASHBOARD.read_bytes()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/status.json":
                    self._send("application/json", json.dumps(snapshot()).encode())
                elif path == "/metrics":  # OpenMetrics to a scraper that asks for it
                    encoder, kind = choose_encoder(self.headers.get("Accept", ""))
                    self._send(kind, encoder(registry))
                elif path == "/":
                    self._send("text/html; charset=utf-8", dashboard)
                else:
                    self.send_error(404)

            def _send(self, kind: str, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: its loss
                    log.debug("status client %s left before the answer", self.client_address[0])

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug(fmt, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, name="status-http", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
