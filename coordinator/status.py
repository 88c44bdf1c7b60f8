"""The coordinator's HTTP status page: `/status.json`, Prometheus `/metrics`, and `/` (HTML)."""

from __future__ import annotations

import html
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("eranos.coordinator.http")
GAUGES = (
    ("round", "eranos_round", "the round under way or next"),
    ("finalized_rounds", "eranos_finalized_rounds", "rounds finalized"),
    ("members", "eranos_members", "members known to the coordinator"),
    ("ready_members", "eranos_ready_members", "members holding the current model"),
    ("loss", "eranos_loss", "mean training loss reported by accepted members, last round"),
    ("bytes_per_step", "eranos_payload_bytes", "mean payload bytes per node per step"),
    ("penalties", "eranos_penalties_total", "members penalized"),
    ("accepted_batches", "eranos_accepted_batches_total", "batches in accepted contributions"),
    ("chain_pending", "eranos_chain_pending_rounds", "finalized rounds not yet recorded on chain"),
)
COUNTERS = (
    ("event_outcomes", "eranos_events_total", "outcome"),
    ("removed", "eranos_removed_total", "reason"),
    ("refused_joins", "eranos_refused_joins_total", "reason"),
    ("checks", "eranos_checks_total", "result"),
    ("rejected_messages", "eranos_rejected_messages_total", "reason"),
)


def prometheus(snap: dict) -> str:
    lines = []
    for key, name, help_text in GAUGES:
        if snap.get(key) is not None:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {float(snap[key])}"]
    for key, name, label in COUNTERS:
        lines += [f"# TYPE {name} counter"]
        for value, count in sorted(snap.get(key, {}).items()):
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{name}{{{label}="{escaped}"}} {count}')
    phase = snap.get("phase", "")
    lines += ["# TYPE eranos_phase gauge", f'eranos_phase{{phase="{phase}"}} 1']
    return "\n".join(lines) + "\n"


def page(snap: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v))}</td></tr>" for k, v in snap.items()
    )
    return f"<!doctype html><title>eranos {html.escape(str(snap.get('run')))}</title><table>{rows}</table>"


class StatusServer:
    def __init__(self, snapshot: Callable[[], dict], host: str = "127.0.0.1", port: int = 0) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                snap = snapshot()
                routes = {
                    "/status.json": ("application/json", json.dumps(snap)),
                    "/metrics": ("text/plain; version=0.0.4", prometheus(snap)),
                    "/": ("text/html", page(snap)),
                }
                if self.path not in routes:
                    self.send_error(404)
                    return
                kind, body = routes[self.path]
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug(fmt, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, name="status-http", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
