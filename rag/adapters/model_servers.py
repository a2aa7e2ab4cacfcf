"""Embedding and reranking models on another machine, over HTTP (httpx).

- `RemoteEmbedder`: `POST {base}/embeddings` {"model", "input": [texts]} -> {"data": [{"embedding",
  "index"}]}, as vLLM, Hugging Face TEI, Ollama, Xinference, OpenAI and `rag serve` answer it. API
  "openai": the texts are sent with the prefixes the named model expects (`text_prefixes`: bge's query
  instruction, e5's "query: "/"passage: "), since those servers embed texts as given; API "rag": the
  texts are sent as they are with `input_type` "query"/"passage", and the other `rag serve` runs its
  own `encode_queries`/`encode_corpus`, so the vectors are exactly its local model's.
- `RemoteReranker`: `POST {base}/rerank`; API "tei" {"query", "texts", "raw_scores": false} ->
  [{"index", "score"}] (TEI, `rag serve`: 0..1, TEI applies the sigmoid); API "cohere" {"model",
  "query", "documents"} -> {"results": [{"index", "relevance_score"}]} (Cohere, Jina, vLLM: 0..1).
  A server that answers raw logits (Xinference unless told to normalise) is recognised by a score
  outside 0..1 among those of one `score_pairs` call: then the sigmoid maps all of that call's scores.

Connection errors, timeouts, 5xx and 429 are retried `retries` times with exponential backoff (a
429/503 `Retry-After` of a few seconds is honoured); a 4xx is not. What still fails is a
ModelUnavailable naming the server and the reason, never the API key."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np

from rag.adapters.embedders import text_prefixes
from rag.adapters.llm_openai import root_cause
from rag.errors import ConfigError, ModelUnavailable
from rag.names import EMBED_APIS, RERANK_APIS

log = logging.getLogger(__name__)
PROBE = "dimension probe"


def shown_url(url: str) -> str:
    """`url` without user:password, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class ModelServer:
    """JSON POSTs to one model server, retried; every failure a ModelUnavailable."""

    def __init__(self, base_url: str, *, what: str, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.5, max_backoff: float = 8.0) -> None:
        if not base_url or not base_url.strip().startswith(("http://", "https://")):
            raise ConfigError(f"a {what} needs an http(s) base URL, got {base_url!r}", field="base_url")
        self.base_url = base_url.strip().rstrip("/")
        self.shown = shown_url(self.base_url)
        self.what = what
        self._api_key = api_key or None
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
                self._client = httpx.Client(timeout=self.timeout, headers=headers)
            return self._client

    def _clean(self, text: str) -> str:
        """`text` (a server's error body) cut short and without the API key, should it echo it."""
        text = " ".join(text.split())[:300]
        return text.replace(self._api_key, "***") if self._api_key else text

    def fail(self, reason: str) -> ModelUnavailable:
        return ModelUnavailable(f"{self.what} {self.shown} {self._clean(reason)}")

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer to `body` POSTed at `path`. Raises ModelUnavailable."""
        url = self.base_url + path
        for attempt in range(self.retries + 1):
            delay = min(self.backoff * 2 ** attempt, self.max_backoff)
            try:
                response = self._http().post(url, json=body)
            except httpx.TimeoutException:
                reason = f"timed out after {self.timeout:g} s"
            except httpx.RequestError as exc:
                reason = f"unreachable: {root_cause(exc)}"
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise self.fail(f"answered {path} with a body that is not JSON") from None
                reason = f"answered HTTP {response.status_code}: {response.text}"
                if response.status_code != 429 and response.status_code < 500:
                    raise self.fail(reason)  # the request itself is wrong: the same one would fail again
                wait = response.headers.get("retry-after", "")
                if wait.isdigit() and int(wait) <= self.max_backoff:
                    delay = float(wait)
            if attempt < self.retries:
                log.warning("%s %s %s; retry %d of %d in %.1f s", self.what, self.shown, self._clean(reason),
                            attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise self.fail(f"{reason} ({self.retries + 1} attempt(s))")


def _malformed(server: ModelServer, detail: str) -> ModelUnavailable:
    return server.fail(f"answered with a malformed body: {detail}")


class RemoteEmbedder:
    """The `Embedder` of a model server; `name` is the served model's (what knowledge bases record).
    `dim` is `dim` when given, else asked of the server once (one probe text) when first needed."""

    def __init__(self, base_url: str, model: str, *, api: str = "openai", api_key: str | None = None,
                 batch_size: int = 32, timeout: float = 60.0, retries: int = 3, dim: int | None = None,
                 backoff: float = 0.5) -> None:
        if api not in EMBED_APIS:
            raise ConfigError(f"unknown embedding server API {api!r}; use one of {list(EMBED_APIS)}", field="embed_api")
        if not model.strip() or model.strip().lower() == "auto":
            raise ConfigError("a remote embedder needs the served model's name (RAG_EMBED_MODEL)", field="embed_model")
        self.server = ModelServer(base_url, what="embedding server", api_key=api_key, timeout=timeout,
                                  retries=retries, backoff=backoff)
        self.api = api
        self._model = model.strip()
        self.batch_size = max(1, batch_size)
        self._dim = dim
        self._prefixes = text_prefixes(self._model) if api == "openai" else ("", "")

    @property
    def name(self) -> str:
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            log.info("embedding model %s at %s: asking the server for its dimension", self._model, self.server.shown)
            self._request([PROBE], "passage")
        assert self._dim is not None
        return self._dim

    def warm_up(self) -> None:
        """One probe request: the server answers, with vectors of the expected dimension."""
        self._request([PROBE], "passage")

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "passage")

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "query")

    def _encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = self.batch_size
        parts = [self._request(list(texts[i : i + step]), kind) for i in range(0, len(texts), step)]
        return np.concatenate(parts)

    def _request(self, texts: list[str], kind: str) -> np.ndarray:
        prefix = self._prefixes[0] if kind == "query" else self._prefixes[1]
        body: dict[str, Any] = {"model": self._model, "input": [prefix + t for t in texts]}
        if self.api == "rag":
            body["input_type"] = kind
        vectors = self._vectors(self.server.post("/embeddings", body), len(texts))
        if self._dim is not None and vectors.shape[1] != self._dim:
            raise _malformed(self.server, f"vectors of dimension {vectors.shape[1]}, expected {self._dim} "
                                          "(RAG_EMBED_DIM, or the server's first answer)")
        self._dim = vectors.shape[1]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _vectors(self, answer: Any, n: int) -> np.ndarray:
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != n:
            raise _malformed(self.server, f"expected `data` with {n} embedding(s)")
        try:
            ordered = sorted(data, key=lambda item: int(item["index"]))
            if [int(item["index"]) for item in ordered] != list(range(n)):
                raise ValueError("indices are not 0..n-1")
            vectors = np.asarray([item["embedding"] for item in ordered], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(self.server, f"`data` items need `index` and a numeric `embedding` ({exc})") from None
        if vectors.ndim != 2 or vectors.shape[1] < 2 or not np.isfinite(vectors).all():
            raise _malformed(self.server, "embeddings must be lists of finite numbers of one length")
        return vectors


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class RemoteReranker:
    """The `PairReranker` of a reranking server. Pairs are grouped by query (one request per query and
    `batch_size` passages); scores in 0..1 (see the module notes for servers that answer logits)."""

    def __init__(self, base_url: str, model: str = "auto", *, api: str = "tei", api_key: str | None = None,
                 batch_size: int = 16, timeout: float = 60.0, retries: int = 3, backoff: float = 0.5) -> None:
        if api not in RERANK_APIS:
            raise ConfigError(f"unknown reranking server API {api!r}; use one of {list(RERANK_APIS)}",
                              field="rerank_api")
        model = (model or "").strip()
        self._model = "" if model.lower() == "auto" else model
        if api == "cohere" and not self._model:
            raise ConfigError("the Cohere rerank API needs the served model's name (RAG_RERANK_MODEL)",
                              field="rerank_model")
        self.server = ModelServer(base_url, what="reranking server", api_key=api_key, timeout=timeout,
                                  retries=retries, backoff=backoff)
        self.api = api
        self.batch_size = max(1, batch_size)
        self._logits_seen = False

    @property
    def name(self) -> str:
        return self._model or f"reranker at {self.server.shown}"

    def warm_up(self) -> None:
        """One probe request: the server answers with a score."""
        self.score_pairs([(PROBE, PROBE)])

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return self.score_pairs([(query, p) for p in passages])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        raw = [0.0] * len(pairs)
        for query, positions in by_query.items():
            for start in range(0, len(positions), self.batch_size):
                chunk = positions[start : start + self.batch_size]
                for position, value in zip(chunk, self._request(query, [pairs[i][1] for i in chunk])):
                    raw[position] = value
        if any(s < 0.0 or s > 1.0 for s in raw):
            if not self._logits_seen:
                log.warning("reranking server %s answers raw logits (a score outside 0..1): mapping them through "
                            "a sigmoid; turn on the server's normalisation for scores that do not depend on the "
                            "batch", self.server.shown)
                self._logits_seen = True
            return [_sigmoid(s) for s in raw]
        return raw

    def _request(self, query: str, passages: list[str]) -> list[float]:
        if self.api == "tei":
            body: dict[str, Any] = {"query": query, "texts": passages, "raw_scores": False, "truncate": True}
            if self._model:
                body["model"] = self._model
        else:
            body = {"model": self._model, "query": query, "documents": passages, "top_n": len(passages),
                    "return_documents": False}
        answer = self.server.post("/rerank", body)
        items, key = (answer, "score") if self.api == "tei" else (
            answer.get("results") if isinstance(answer, dict) else None, "relevance_score")
        if not isinstance(items, list) or len(items) != len(passages):
            raise _malformed(self.server, f"expected {len(passages)} scores"
                                          + (" as a list" if self.api == "tei" else " under `results`"))
        try:
            scores = {int(item["index"]): float(item[key]) for item in items}
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(self.server, f"items need `index` and a numeric `{key}` ({exc})") from None
        if sorted(scores) != list(range(len(passages))) or not all(math.isfinite(s) for s in scores.values()):
            raise _malformed(self.server, "indices must be 0..n-1 once each, scores finite")
        return [scores[i] for i in range(len(passages))]
