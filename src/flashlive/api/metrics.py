"""Prometheus metrics: requests by route and status, time to first token, tokens, engine load."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashlive.engine import EngineStats
from flashlive.models import ModelManager
from flashlive.protocol.base import model_id

_ACTION = re.compile(r"^/v1(?:alpha|beta)?/models/[^/:]+:(\w+)$")
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


def route_label(method: str, path: str) -> str:
    """A bounded label for a request path (model ids are not labels here)."""
    if m := _ACTION.match(path):
        return m.group(1)
    if re.match(r"^/v1(?:alpha|beta)?/models/?$", path):
        return "models.list"
    if re.match(r"^/v1(?:alpha|beta)?/models/[^/:]+$", path):
        return "models.get"
    if re.match(r"^/v1beta/usage$", path):
        return "usage"
    if re.match(r"^/v1(?:alpha|beta)?/cachedContents/?$", path):
        return "cachedContents.create" if method == "POST" else "cachedContents.list"
    if re.match(r"^/v1(?:alpha|beta)?/cachedContents/[^/]+$", path):
        return {"PATCH": "cachedContents.update", "DELETE": "cachedContents.delete"}.get(
            method, "cachedContents.get"
        )
    if re.match(r"^/v1(?:alpha|beta)?/auth_tokens$", path):
        return "authTokens.create"
    if path.startswith("/ws/"):
        return "live"
    if path in ("/healthz", "/metrics"):
        return path[1:]
    return "other"


class _EngineCollector(Collector):
    def __init__(self, models: ModelManager) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "flashlive_generations_active", "Generations running on the engine", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "flashlive_generations_queued", "Generations waiting for the engine", labels=["model"]
        )
        loaded = GaugeMetricFamily("flashlive_model_loaded", "1 when loaded", labels=["model"])
        current = self._models.loaded
        for spec in self._models.specs:
            model = current.get(spec.id)
            active.add_metric([spec.id], model.engine.active if model else 0)
            queued.add_metric([spec.id], model.engine.queued if model else 0)
            loaded.add_metric([spec.id], 1 if model else 0)
        yield from (active, queued, loaded)
        yield from _batching({m: loaded.engine.stats for m, loaded in current.items()})


_ENGINE_GAUGES = (
    ("flashlive_engine_slots", "Sequences the engine decodes together", "slots"),
    ("flashlive_engine_slots_busy", "Sequences running a job", "slots_busy"),
    ("flashlive_engine_sequences_resident", "Sequences held in the KV cache", "resident"),
    ("flashlive_engine_kv_cells_used", "KV cells the sequences hold", "kv_used"),
)
_ENGINE_COUNTERS = (
    ("flashlive_engine_steps", "Decode steps", "steps"),
    ("flashlive_engine_step_sequences", "Sequences the steps carried (/ steps: mean batch size)",
     "step_sequences"),
    ("flashlive_engine_step_tokens", "Tokens the steps carried", "step_tokens"),
    ("flashlive_engine_evicted", "Idle sequences evicted to make room", "evicted"),
    ("flashlive_engine_state_bytes_out", "Bytes of state copied out on eviction",
     "evicted_bytes"),
    ("flashlive_engine_state_bytes_in", "Bytes of saved state loaded back", "restored_bytes"),
)  # fmt: skip


def _batching(stats: dict[str, EngineStats]) -> Iterator[Metric]:
    """The engine's slots and steps: how full, how batched, how long each class waits."""
    for name, text, field in _ENGINE_GAUGES:
        gauge = GaugeMetricFamily(name, text, labels=["model"])
        for model, s in stats.items():
            gauge.add_metric([model], getattr(s, field))
        yield gauge
    for name, text, field in _ENGINE_COUNTERS:
        counter = CounterMetricFamily(name, text, labels=["model"])
        for model, s in stats.items():
            counter.add_metric([model], getattr(s, field))
        yield counter
    admitted = CounterMetricFamily(
        "flashlive_engine_admitted", "Jobs given a sequence, by class", labels=["model", "class"]
    )
    waited = CounterMetricFamily(
        "flashlive_engine_queue_wait_seconds",
        "Time jobs waited for a sequence, by class (/ admitted: the mean wait)",
        labels=["model", "class"],
    )
    for model, s in stats.items():
        for name, count, seconds in s.waits:
            admitted.add_metric([model, name.lower()], count)
            waited.add_metric([model, name.lower()], seconds)
    yield from (admitted, waited)


OTHER_MODEL = "other"  # the label of a model this server does not serve


class Metrics:
    def __init__(self, models: ModelManager) -> None:
        self._models = models
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flashlive_requests", "HTTP requests", ["route", "code"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "flashlive_request_seconds",
            "Time to the end of the response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "flashlive_time_to_first_token_seconds",
            "From request arrival to the first generated text",
            ["model", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens_generated = Counter(
            "flashlive_tokens_generated", "Output tokens", ["model"], registry=self.registry
        )
        self.prompt_tokens = Counter(
            "flashlive_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry
        )
        # From the usage ledger's records, so they agree with `flashlive usage`.
        self.tokens_total = Counter(
            "flashlive_tokens",
            "Tokens billed, by direction (input includes cached)",
            ["model", "direction"],
            registry=self.registry,
        )
        self.cost_usd = Counter(
            "flashlive_cost_usd",
            "Cost in USD under the current price table",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(models))

    def model_label(self, model: str) -> str:
        """A model label from a bounded set: a request may name any model, and each new label
        value is a new series kept for the life of the process."""
        model = model_id(model)
        return model if any(s.id == model for s in self._models.specs) else OTHER_MODEL


class MetricsMiddleware:
    """Counts every request by route and status, including those refused before routing."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        route = route_label(scope["method"], scope["path"])
        status = 500
        started = time.perf_counter()

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_recording)
        finally:
            self._metrics.requests.labels(route, str(status)).inc()
            self._metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
