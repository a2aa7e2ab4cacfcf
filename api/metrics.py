"""Prometheus metrics in the text exposition format (0.0.4), written by hand (no client library):

- `rag_http_requests_total{method,route,status}` and `rag_http_request_duration_seconds{method,route}`
  (a histogram; for streamed answers the time until the last byte), `rag_http_requests_in_flight`
- `rag_errors_total{code}`: error responses by error code
- `rag_stage_duration_seconds{stage}`: pipeline stages of answered queries (embed, dense, bm25,
  fusion, rerank, generate, verify, total, ...)
- `rag_llm_time_to_first_token_seconds` and `rag_llm_time_per_output_token_seconds`: TTFT and TPOT
  of the LLM call each generated answer comes from (the `ttft`/`tpot` timings, rag/llm_timing.py)
- `rag_ingest_jobs_total{status}` and `rag_ingest_jobs_active`

`route` is the route template (`/v1/kbs/{kb}/documents`), so label sets stay bounded."""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
TOKEN_TIMINGS = ("ttft", "tpot")  # per-token timings: their own histograms, not stages


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, labels
        self._values: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[tuple(labels)] += amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(labels), 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        with self._lock:
            items = sorted(self._values.items())
        for labels, value in items:
            yield f"{self.name}{_labels(self.label_names, labels)} {_num(value)}"


class Gauge:
    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> None:
        self.name, self.help, self.read = name, help_text, read
        self._value = 0.0
        self._lock = threading.Lock()

    def add(self, amount: float) -> None:
        with self._lock:
            self._value += amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        value = self.read() if self.read else self._value
        yield f"{self.name} {_num(value)}"


class Histogram:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.label_names, self.buckets = name, help_text, labels, buckets
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., sum, count
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            series = self._series.setdefault(tuple(labels), [0.0] * (len(self.buckets) + 2))
            series[bisect.bisect_left(self.buckets, value)] += 1  # the first bucket with le >= value
            series[-2] += value
            series[-1] += 1

    def count(self, *labels: str) -> int:
        with self._lock:
            return int(self._series.get(tuple(labels), [0.0])[-1])

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for labels, series in items:
            cumulative = 0.0
            for bound, n in zip((*self.buckets, float("inf")), series[: len(self.buckets) + 1]):
                cumulative += n
                le = "+Inf" if bound == float("inf") else _num(bound)
                bucket_labels = _labels(self.label_names, labels, 'le="' + le + '"')
                yield f"{self.name}_bucket{bucket_labels} {_num(cumulative)}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {series[-2]!r}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {_num(series[-1])}"


class Metrics:
    def __init__(self, active_jobs: Callable[[], float] | None = None) -> None:
        self.requests = Counter("rag_http_requests_total", "HTTP requests by route and status.",
                                ("method", "route", "status"))
        self.latency = Histogram("rag_http_request_duration_seconds", "HTTP request latency (to the last byte).",
                                 ("method", "route"), HTTP_BUCKETS)
        self.in_flight = Gauge("rag_http_requests_in_flight", "HTTP requests being served.")
        self.errors = Counter("rag_errors_total", "Error responses and stream errors by error code.", ("code",))
        self.stages = Histogram("rag_stage_duration_seconds", "Pipeline stage durations of answered queries.",
                                ("stage",), STAGE_BUCKETS)
        self.ttft = Histogram("rag_llm_time_to_first_token_seconds",
                              "Time to the first token of the LLM call a generated answer comes from.", (),
                              TTFT_BUCKETS)
        self.tpot = Histogram("rag_llm_time_per_output_token_seconds",
                              "Time per output token after the first, of the LLM call a generated answer comes from.",
                              (), TPOT_BUCKETS)
        self.jobs = Counter("rag_ingest_jobs_total", "Finished ingest jobs by final status.", ("status",))
        self.jobs_active = Gauge("rag_ingest_jobs_active", "Ingest jobs queued or running.", active_jobs)

    def observe_stages(self, timings: Mapping[str, float]) -> None:
        for stage, seconds in timings.items():
            if not isinstance(seconds, (int, float)) or seconds <= 0:
                continue
            if stage in TOKEN_TIMINGS:
                (self.ttft if stage == "ttft" else self.tpot).observe(float(seconds))
            else:
                self.stages.observe(float(seconds), stage)

    def render(self) -> str:
        families = (self.requests, self.latency, self.in_flight, self.errors, self.stages, self.ttft, self.tpot,
                    self.jobs, self.jobs_active)
        return "\n".join(line for family in families for line in family.render()) + "\n"


class MetricsMiddleware:
    """Counts every HTTP request by its route template and measures it until the last body byte."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.in_flight.add(1)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.add(-1)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.inc(method, route, str(status[0]))
            self.metrics.latency.observe(time.perf_counter() - started, method, route)
