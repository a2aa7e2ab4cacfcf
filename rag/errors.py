"""The error hierarchy. Edges translate these: the CLI to an exit code and one line, the API
to an HTTP status and a JSON body `{error: {code, message, field}}`."""

from __future__ import annotations


class RagError(Exception):
    """Base of every error the service raises on purpose."""

    code = "rag_error"
    http_status = 500
    retry_after: int | None = None  # seconds: the API sends it as `Retry-After`

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ConfigError(RagError):
    """A setting or argument has a bad value."""

    code = "invalid_config"
    http_status = 422


class InvalidRequest(RagError):
    """A request argument is malformed (empty question, bad filter, ...)."""

    code = "invalid_request"
    http_status = 422


class NotFound(RagError):
    """An unknown knowledge base, document, job or conversation."""

    code = "not_found"
    http_status = 404


class ParseError(RagError):
    """A file could not be parsed (corrupt, empty, unsupported, unreadable)."""

    code = "parse_error"
    http_status = 415


class UnsupportedFile(ParseError):
    code = "unsupported_media_type"
    http_status = 415


class ModelError(RagError):
    """A model could not be found or loaded."""

    code = "model_error"
    http_status = 503


class ModelUnavailable(ModelError):
    """A model server (RAG_EMBED_BASE_URL, RAG_RERANK_BASE_URL) is unreachable, timed out, refused
    the request or answered with something that is not embeddings or scores. Nothing was written:
    an ingest stops with its documents pending, and the same request can be retried later."""

    code = "model_unavailable"
    http_status = 503
    retry_after = 10


class EmbeddingMismatch(RagError):
    """A knowledge base was built with another embedding model or dimension."""

    code = "embedding_mismatch"
    http_status = 409


class LLMError(RagError):
    """The LLM endpoint is unreachable, timed out or answered with an error."""

    code = "llm_unavailable"
    http_status = 503


class Busy(RagError):
    """A knowledge base is being written by another job or process; retry when it has finished."""

    code = "busy"
    http_status = 409


class StoreError(RagError):
    """The vector store or lexical index failed or disagrees with the catalog."""

    code = "store_error"
    http_status = 503


class StoreHeld(StoreError):
    """An embedded store is open in another process (a running `rag serve`): use its API, or stop it."""

    code = "store_held"
    http_status = 409
