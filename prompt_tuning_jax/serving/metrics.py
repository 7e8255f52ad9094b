"""The server's Prometheus series (prometheus_client, in a registry of its own so two
servers in one process never share counters); served at GET /metrics."""
from __future__ import annotations

from typing import Sequence

import prometheus_client as prom

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
  """Requests by endpoint and status, request latency, batch sizes and time, queue depth,
  rows per prompt."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    r = self.registry
    self.requests = prom.Counter("ptj_requests", "HTTP requests by endpoint and status code",
                                 ["endpoint", "status"], registry=r)
    self.latency = prom.Histogram("ptj_request_latency_seconds", "Request latency, arrival to response",
                                  ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
    self.batch_rows = prom.Histogram("ptj_batch_rows", "Rows per batch run (before padding)", ["kind"],
                                     buckets=_ROW_BUCKETS, registry=r)
    self.batch_seconds = prom.Histogram("ptj_batch_seconds", "Device time per batch", ["kind"],
                                        buckets=_LATENCY_BUCKETS, registry=r)
    self.batch_prompts = prom.Histogram("ptj_batch_prompts", "Distinct prompts per batch", ["kind"],
                                        buckets=_ROW_BUCKETS, registry=r)
    self.queue_rows = prom.Gauge("ptj_queue_rows", "Rows queued or running", registry=r)
    self.prompt_rows = prom.Counter("ptj_prompt_rows", "Rows served per prompt", ["prompt"], registry=r)
    self.prompts = prom.Gauge("ptj_prompts_registered", "Prompts in the registry", registry=r)

  def observe_batch(self, kind: str, rows: int, seconds: float, parts: Sequence[tuple[str, int]]) -> None:
    self.batch_rows.labels(kind).observe(rows)
    self.batch_seconds.labels(kind).observe(seconds)
    self.batch_prompts.labels(kind).observe(len({p for p, _ in parts}))
    for prompt, n in parts:
      self.prompt_rows.labels(prompt).inc(n)

  def exposition(self) -> tuple[bytes, str]:
    return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST
