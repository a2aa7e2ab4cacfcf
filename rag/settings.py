"""One typed settings object. Environment variables use the `RAG_` prefix
(`RAG_QDRANT_URL`, `RAG_LLM_BASE_URL`, ...); a `.env` file or a `RAG_CONFIG` file (JSON or
TOML of the same field names) may also provide them. Bad values fail at start with the value
in the message. Adapters never see this object: the factory passes them plain arguments."""

from __future__ import annotations

import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rag.errors import ConfigError
from rag.models import DEFAULT_EMBEDDED_LLM, EMBEDDED_LLMS
from rag.names import (AUTO, CHUNK_OVERLAP_RANGE, CHUNK_SIZE_RANGE, CHUNKERS, EMBED_APIS, FUSIONS, RERANK_APIS,
                       STRATEGIES)
from rag.redact import is_postgres_url, redact_url

log = logging.getLogger(__name__)
TRANSFORMS = ("rewrite", "multi_query", "hyde", "step_back", "sub_question")
# fields typed SecretStr: masked in repr, model_dump and every error message
SECRET_FIELDS = ("qdrant_api_key", "llm_api_key", "api_admin_key", "embed_api_key", "rerank_api_key")
# connection URLs that may carry a password: shown with it masked (rag.redact) in repr, public_dict
# and error messages; the factory passes the plain value to the adapters
URL_FIELDS = ("catalog_url", "pgvector_url")
# switches measured not to help and removed (issue 32, chunk headers since; docs/benchmarks.md,
# "Removed levers"): still set in an environment, `.env` or RAG_CONFIG file, they are ignored with one warning
REMOVED_SETTINGS = ("context_focus_first_tokens", "context_single", "answer_style", "answer_example",
                    "answer_vote", "answer_retry", "chunk_headers", "fusion_depth", "fusion_power",
                    "fusion_agreement_depth")
# setting values removed the same way: (setting, old value) -> the value used instead, with a warning
REMOVED_VALUES = {("fusion", "confidence"): "convex"}


def _comma_list(value: Any) -> Any:
    """A list setting from the environment: `a,b` or a JSON list `["a", "b"]`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                pass
            else:
                return tuple(value) if isinstance(value, list) else value
        value = [v.strip() for v in text.split(",") if v.strip()]
    return tuple(value or ())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    # where knowledge bases, catalogs, caches and conversations live
    data_dir: Path = Field(default_factory=lambda: Path(os.path.expanduser("~/.rag")))
    # the catalog (knowledge bases, documents, version families, API keys, conversations, jobs):
    # SQLite files in data_dir by default; a postgresql:// URL (its password is never shown) puts
    # it in a PostgreSQL database that API replicas on any number of hosts share, with advisory
    # write locks and leased ingest jobs (docs/scaling.md)
    catalog_url: str | None = None
    # PostgreSQL connections each store (catalog, keys, conversations, jobs, pgvector) of one
    # process opens at most, so concurrent requests run side by side (benchmarks/pg_concurrency.py);
    # a replica holds up to 5x this many, plus one per held write lock: keep the total under the
    # server's max_connections
    pg_pool_size: int = Field(4, ge=1, le=64)
    # an ingest job whose replica stopped renewing its lease (killed, host lost) is resumed by
    # another replica this many seconds after the last renewal (at once by a restart on its host)
    job_lease_s: float = Field(30.0, ge=2, le=3600)

    # vector store: embedded qdrant-edge engine by default; qdrant-client local mode on request;
    # a Qdrant server when qdrant_url is set; PostgreSQL + pgvector on request ("pgvector", at
    # pgvector_url, default catalog_url; docs/scaling.md)
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    vector_backend: Literal["auto", "edge", "local", "server", "pgvector"] = "auto"
    pgvector_url: str | None = None  # postgresql://user:password@host:5432/db (the password is never shown)
    hnsw_m: int = Field(16, ge=4, le=128)
    hnsw_ef_construct: int = Field(100, ge=8, le=1000)
    hnsw_ef: int = Field(128, ge=8, le=4096)
    # `rag ingest` builds the HNSW graph of the embedded store when at least this many vectors are
    # outside it (0 = never): Qdrant Edge has no background optimiser, and its exact search costs
    # ~1 ms per 20k vectors (13.6 ms against 1.0 ms at 100k, docs/benchmarks.md); building holds the
    # process ~1 s per 10k vectors, so the API's ingest jobs leave it to `rag ingest` / `rag index`
    hnsw_build_min_unindexed: int = Field(20_000, ge=0)
    on_disk_vectors: bool = False
    on_disk_payload: bool = False
    scalar_quantization: bool = False
    shard_number: int = Field(1, ge=1, le=256)
    replication_factor: int = Field(1, ge=1, le=16)
    # sparse = BM25 as Qdrant sparse vectors; pgvector = BM25 as sparsevecs in the pgvector tables
    lexical_backend: Literal["auto", "local", "sparse", "pgvector"] = "auto"

    # folders holding models by name (embedders and rerankers alike), searched before ~/.rag/models
    # and the Hugging Face cache; RAG_MODELS_DIR (or RAG_MODELS_DIRS): a path list, os.pathsep separated
    models_dirs: Annotated[tuple[Path, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("models_dirs", "RAG_MODELS_DIRS", "RAG_MODELS_DIR"))

    # embeddings
    embed_model: str = "auto"  # "auto", a bge name (BAAI/bge-m3, ...), a local path, or a bundled model
    embed_batch_size: int = Field(32, ge=1, le=4096)
    embed_device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:0" ...
    embed_max_length: int = Field(512, ge=16, le=8192)
    # an embedding server instead of a local model (rag/adapters/model_servers.py): its base URL
    # ("http://gpu-host:8080/v1"); embed_model is then the served model's name (required: knowledge
    # bases record it), embed_batch_size the texts per request. embed_dim: the model's dimension,
    # else asked of the server once (one probe text) when first needed
    embed_base_url: str | None = None
    embed_api: Literal[EMBED_APIS] = "openai"
    embed_api_key: SecretStr | None = None
    embed_timeout: float = Field(60.0, gt=0, le=3600)
    embed_retries: int = Field(3, ge=0, le=10)  # connection errors, 5xx and 429, with backoff; never 4xx
    embed_dim: int | None = Field(None, ge=2, le=65536)

    # chunking
    chunker: Literal[CHUNKERS] = "recursive"
    chunk_size: int = Field(800, ge=CHUNK_SIZE_RANGE[0], le=CHUNK_SIZE_RANGE[1])
    chunk_overlap: int = Field(120, ge=CHUNK_OVERLAP_RANGE[0], le=CHUNK_OVERLAP_RANGE[1])
    semantic_percentile: float = Field(90.0, gt=0, lt=100)
    generate_questions: int = Field(0, ge=0, le=10)
    # write a batch's chunks (vector store, BM25, catalog swap) in a background thread while the next
    # batch embeds, in order and as crash-safe as inline (ingest/writer.py); off: write, then embed on
    ingest_overlap_writes: bool = True

    # OCR of scanned PDF pages and image files with the bundled PP-OCRv4 models (Chinese + English).
    # "auto": a PDF page is OCR'd when it has no text layer (or is one big image with almost no text);
    # "off": images are skipped and scanned pages dropped. Pages render at ocr_dpi, are downscaled to
    # ocr_max_side pixels; images over ocr_max_pixels are refused before decoding (decompression bombs).
    # A file's OCR stops after ocr_max_pages pages or, at the next page, after ocr_max_seconds_per_file
    # (what was read is indexed, the rest reported): 500 pages is a thick scanned book; 600 s is about
    # 150 A4 pages at the measured ~4 s a page on 2 cores, and bounds how long one file holds the
    # knowledge base's write lock (an API upload waits behind it)
    ocr: Literal["auto", "off"] = "auto"
    ocr_dpi: int = Field(300, ge=72, le=600)
    ocr_max_side: int = Field(4000, ge=500, le=20000)
    ocr_max_pixels: int = Field(89_478_485, ge=1_000_000)
    ocr_max_pages: int = Field(500, ge=1, le=100_000)
    ocr_max_seconds_per_file: float = Field(600.0, gt=0, le=86_400)

    # retrieval and fusion
    top_k: int = Field(30, ge=1, le=1000)  # per list, per query variant
    rrf_k: int = Field(60, ge=1)
    # "convex": the convex combination of each list's min-max normalised scores, the dense list's
    # share `fusion_alpha`, BM25's 1 - fusion_alpha (rag.fusion.convex); "rrf": reciprocal rank
    # fusion with `rrf_k`. Without a reranker the fused list is the final ranking; convex with
    # alpha 0.4 won the worst case over six datasets where either list is the better one (the
    # selection rule and the test halves: docs/benchmarks.md, "Fusion"). The per-query
    # confidence-weighted RRF ("confidence") lost there and was removed: set, it means "convex".
    fusion: Literal[FUSIONS] = "convex"
    fusion_alpha: float = Field(0.4, ge=0, le=1)
    dense_weight: float = Field(1.0, ge=0)
    bm25_weight: float = Field(1.0, ge=0)
    original_query_weight: float = Field(1.0, ge=0)
    bm25_stopwords: bool = True
    transforms: Annotated[tuple[str, ...], NoDecode] = ()  # RAG_TRANSFORMS=rewrite,hyde (comma list)
    multi_query_n: int = Field(3, ge=1, le=10)

    # reranking
    rerank_model: str = "auto"  # "auto" (a local bge-reranker if found), "none", a name or a path
    rerank_candidates: int = Field(20, ge=1, le=500)
    rerank_max_length: int = Field(256, ge=16, le=8192)
    rerank_batch_size: int = Field(16, ge=1, le=1024)
    rerank_min_score: float = Field(0.05, ge=0, le=1)
    # a reranking server instead of a local model: POST {rerank_base_url}/rerank in the rerank_api
    # shape; rerank_model names the served model ("auto": none sent), rerank_batch_size the passages per request
    rerank_base_url: str | None = None
    rerank_api: Literal[RERANK_APIS] = "tei"
    rerank_api_key: SecretStr | None = None
    rerank_timeout: float = Field(60.0, gt=0, le=3600)
    rerank_retries: int = Field(3, ge=0, le=10)

    # micro-batching: concurrent queries share one embedding call and one reranking call
    batch_queries: bool = True
    batch_max_queries: int = Field(64, ge=1, le=4096)  # query texts per embedding call
    batch_max_pairs: int = Field(256, ge=1, le=65536)  # (query, passage) pairs per reranking call
    batch_wait_ms: float = Field(0.0, ge=0, le=1000)  # wait for company when the model is idle (0: never)

    # generation
    llm_base_url: str | None = None  # an OpenAI-compatible endpoint (vLLM, ...); None = embedded model
    llm_model: str = "default"
    llm_api_key: SecretStr | None = None
    llm_timeout: float = Field(120.0, gt=0)
    llm_context_window: int = Field(4096, ge=512)
    llm_max_tokens: int = Field(384, ge=16)
    llm_temperature: float = Field(0.0, ge=0, le=2)
    llm_threads: int = Field(0, ge=0)  # embedded llama.cpp threads; 0 = all cores
    llm_gguf_path: Path | None = None  # a local GGUF for the embedded runtime
    # the bundled model the embedded runtime runs when llm_gguf_path is unset (rag/models.py BUNDLED_LLMS)
    llm_embedded: Literal[EMBEDDED_LLMS] = DEFAULT_EMBEDDED_LLM
    # a transformers model directory run in-process (on the GPU when present) when llm_base_url is unset
    llm_local_model: Path | None = None
    llm_device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")  # for llm_local_model
    context_top_n: int = Field(5, ge=1, le=50)
    refuse_min_score: float = Field(0.2, ge=0, le=1)  # best rerank score under this: refuse without the LLM
    verify_citations: bool = True  # score citations, attribute uncited claims to supporting sources
    refuse_unsupported: bool = True  # replace an answer that no source supports by the refusal
    citation_min_support: float = Field(0.5, ge=0, le=1)
    # what the model reads (rag/focus.py): near-duplicate passages collapsed, passages stating the
    # question's year/edition first, each passage cut to its sentences around the question's terms
    context_dedupe: bool = True
    match_years: bool = True
    context_focus: bool = True
    context_focus_tokens: int = Field(160, ge=32, le=4096)  # estimated tokens kept per passage
    # give the model only the passages that each state answer_min_coverage of the question's subject
    # terms (all of them when none does); an answer from one left out would fail the coverage check.
    # Measured once (CMRC 2018 dev, 60 q: +0.033 [-0.050, +0.117], more wrong answers): off, kept
    # until a second sample decides (CONTRIBUTING.md, "Levers")
    context_about: bool = False
    # the answer prompt states the question before the sources as well as after them. Measured once
    # (CMRC 2018 dev, 60 q: -0.017 [-0.133, +0.100]): off, kept until a second sample decides
    question_first: bool = False
    # the prompt lists the sources from the last number to the first, the best next to the question
    # (the numbers stay the ranks). Dev halves: CMRC 2018 150 q +0.093 [+0.027, +0.160], COVID-QA
    # 60 q +0.100 [+0.017, +0.183], same latency (docs/benchmarks.md, "The best source last")
    context_best_last: bool = True
    # refuse an answer that does not address the question (rag/answer_check.py)
    answer_check: bool = True
    # ... and refuse one whose cited sources state under this share of the question's subject terms
    # (rag/answer_check.py question_coverage; 0 = off). Chosen on the dev halves: 0.5 refused 15 of
    # 20 CMRC 2018 and 6 of 17 COVID-QA noise-only answers and 4 of 4 wrong retrieved CMRC answers,
    # losing 0 of 43 and 1 of 18 right ones (docs/benchmarks.md, "Sources about the question")
    answer_min_coverage: float = Field(0.5, ge=0, le=1)

    # answer strategies (rag/strategies.py): auto = stuff when the sources fit one prompt, else map_reduce
    strategy: Literal[STRATEGIES] = AUTO
    strategy_sources: int = Field(12, ge=1, le=50)  # hits for map_reduce/refine/map_rerank when no limit is given
    strategy_group_sources: int = Field(3, ge=1, le=50)  # sources per map / refine group (also budget-bound)
    strategy_parallel: int = Field(4, ge=1, le=32)  # concurrent map calls
    # questions about the collection itself ("how many documents ...") answered from the catalog
    collection_questions: bool = True
    # document versions (rag/versions.py): prefer the newest document of a version family
    prefer_latest_version: bool = True
    version_min_overlap: float = Field(0.5, ge=0, le=1)  # shingle Jaccard for two names to be one family

    # API
    api_admin_key: SecretStr | None = None
    auth_disabled: bool = False
    public_metrics: bool = False  # /metrics without an API key (else it needs one, like /readyz details)
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()  # comma list
    max_upload_mb: int = Field(50, ge=1)  # one uploaded file
    # one request body, every file of an upload and the multipart framing: 413 while it streams
    max_request_mb: int = Field(200, ge=1)
    # seconds a request body may take to arrive (from the app's first read): 408 and the connection closed
    request_body_timeout: float = Field(60.0, gt=0, le=3600)
    max_concurrent_uploads_per_key: int = Field(4, ge=1, le=1000)  # one more upload of that key: 429
    # `POST /v1/kbs/{kb}/documents/url`: one page fetched by the server (api/url_import.py), within this many
    # seconds; loopback, private, link-local and reserved addresses are refused unless allowed (SSRF)
    url_import_timeout: float = Field(20.0, gt=0, le=600)
    url_import_allow_private: bool = False
    # the bytes of an upload's failed files are kept this long for `POST /v1/jobs/{id}/retry` (api/jobs.py)
    failed_upload_keep_hours: float = Field(72.0, gt=0, le=24 * 365)
    # bounds on parsing one file, CLI and API alike (ingest/limits.py); the upload limit above is separate
    max_file_mb: float = Field(100.0, gt=0)  # larger files are skipped with a reason
    max_unzipped_mb: float = Field(200.0, gt=0)  # DOCX/XLSX: what one member and all members may unpack to
    max_zip_ratio: float = Field(100.0, gt=1)  # DOCX/XLSX: uncompressed/compressed size of a member over 1 MB
    # what one file's reader may spend: over any of these the file is skipped with the reason (never indexed in part)
    parse_max_rows: int = Field(200_000, ge=1)  # table rows (CSV, TSV, XLSX) and JSON records
    parse_max_cells: int = Field(5_000_000, ge=1)  # table cells (a row counts up to its last filled column)
    parse_max_seconds: float = Field(120.0, gt=0)  # reading one file's text (OCR has its own bounds)
    default_kb: str = "default"

    @field_validator("embed_base_url", "rerank_base_url", mode="before")
    @classmethod
    def _blank_url(cls, value: Any) -> Any:
        """An empty base URL (`RAG_EMBED_BASE_URL=` in a compose file) means none."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("transforms", mode="before")
    @classmethod
    def _split_transforms(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("models_dirs", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            value = [v.strip() for v in str(value).split(os.pathsep) if v.strip()]
        return tuple(Path(os.path.expanduser(str(v))) for v in value or ())

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator(*dict.fromkeys(name for name, _ in REMOVED_VALUES), mode="before")
    @classmethod
    def _removed_value(cls, value: Any, info: ValidationInfo) -> Any:
        """A REMOVED_VALUES value of any setting becomes the value used instead, with one warning."""
        instead = REMOVED_VALUES.get((info.field_name, value)) if isinstance(value, str) else None
        if instead is None:
            return value
        log.warning("%s %r was measured not to help and removed (docs/benchmarks.md, \"Removed levers\"); "
                    "using %r", info.field_name, value, instead)
        return instead

    @field_validator("transforms")
    @classmethod
    def _known_transforms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; choose from {list(TRANSFORMS)}")
        return value

    @field_validator("catalog_url", "pgvector_url")
    @classmethod
    def _check_postgres_url(cls, value: str | None) -> str | None:
        if value and not is_postgres_url(value):
            raise ValueError("use a postgresql://user:password@host:port/database URL, or leave it unset")
        return value or None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})")
        if self.max_request_mb <= self.max_upload_mb:
            raise ValueError(f"max_request_mb ({self.max_request_mb}) must be larger than max_upload_mb "
                             f"({self.max_upload_mb}): a request carries a whole file and its framing")
        if self.embed_base_url and self.embed_model.strip().lower() in ("", "auto"):
            raise ValueError("embed_base_url (RAG_EMBED_BASE_URL) needs embed_model (RAG_EMBED_MODEL): the name of "
                             "the model the server serves, which knowledge bases record (e.g. BAAI/bge-m3)")
        if self.rerank_base_url and self.rerank_model.strip().lower() in ("", "none", "off", "false", "0"):
            raise ValueError(f"rerank_base_url (RAG_RERANK_BASE_URL) is set but rerank_model is "
                             f"{self.rerank_model!r}: unset the URL to turn reranking off")
        if self.rerank_base_url and self.rerank_api == "cohere" and self.rerank_model.strip().lower() == "auto":
            raise ValueError("rerank_api 'cohere' needs rerank_model (RAG_RERANK_MODEL): the served model's name")
        if self.vector_backend == "server" and not self.qdrant_url:
            raise ValueError("vector_backend 'server' needs qdrant_url (RAG_QDRANT_URL)")
        if self.vector_backend == "pgvector" and not self.resolved_pgvector_url:
            raise ValueError("vector_backend 'pgvector' needs pgvector_url (RAG_PGVECTOR_URL) or catalog_url "
                             "(RAG_CATALOG_URL)")
        lexical, backend = self.resolved_lexical_backend, self.resolved_vector_backend
        if (lexical == "pgvector" and backend != "pgvector") or (lexical == "sparse" and backend == "pgvector"):
            raise ValueError(f"lexical_backend {lexical!r} does not go with vector_backend {backend!r}: "
                             f"BM25 as pgvector sparsevecs needs vector_backend 'pgvector', BM25 as Qdrant sparse "
                             f"vectors a qdrant-client store; or set lexical_backend 'local'")
        return self

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name in URL_FIELDS and isinstance(value, str) else value

    @property
    def resolved_pgvector_url(self) -> str | None:
        """Where the pgvector store lives: pgvector_url, else the catalog's database."""
        return self.pgvector_url or self.catalog_url

    @property
    def resolved_vector_backend(self) -> str:
        if self.vector_backend != "auto":
            return self.vector_backend
        return "server" if self.qdrant_url else "edge"

    @property
    def resolved_lexical_backend(self) -> str:
        if self.lexical_backend != "auto":
            return self.lexical_backend
        return {"server": "sparse", "pgvector": "pgvector"}.get(self.resolved_vector_backend, "local")

    def public_dict(self) -> dict[str, Any]:
        """The resolved settings without secrets, for reports and `/readyz`."""
        data = self.model_dump(mode="json")
        for secret in SECRET_FIELDS:
            if data.get(secret):
                data[secret] = "***"
        for url in URL_FIELDS:
            if data.get(url):
                data[url] = redact_url(data[url])
        return data

    @staticmethod
    def secret(value: SecretStr | None) -> str | None:
        """The plain value of a secret field (None when unset or empty), for the factory and the edges."""
        return (value.get_secret_value() or None) if value is not None else None


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, an optional `RAG_CONFIG` file and overrides.

    Raises ConfigError naming the bad field and value.
    """
    file_values: dict[str, Any] = {}
    config_path = os.environ.get("RAG_CONFIG")
    if config_path:
        path = Path(config_path)
        try:
            raw = path.read_bytes()
            file_values = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read RAG_CONFIG file {path}: {exc}", field="RAG_CONFIG") from exc
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    removed = removed_settings_given(values)
    if removed:
        log.warning("ignoring removed setting(s) %s: measured not to help and deleted "
                    "(docs/benchmarks.md, \"Removed levers\")", ", ".join(removed))
    try:
        return Settings(**values)
    except ValidationError as exc:
        message, name = _describe(exc)
        raise ConfigError(message, field=name) from None


def removed_settings_given(values: dict[str, Any]) -> list[str]:
    """The REMOVED_SETTINGS that `values` (file and overrides), the environment or the `.env` file
    still set, as their RAG_ variable names."""
    names = [*os.environ, *_env_file_names(Path(str(Settings.model_config.get("env_file") or ".env")))]
    given = {k.lower() for k in values} | {k.lower().removeprefix("rag_") for k in names
                                           if k.lower().startswith("rag_")}
    return [f"RAG_{name.upper()}" for name in REMOVED_SETTINGS if name in given]


def _env_file_names(path: Path) -> list[str]:
    """The variable names a `.env` file sets (`NAME=value`, `export NAME=value`); none when unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split("=", 1)[0].strip().removeprefix("export ").strip() for line in lines
            if "=" in line and not line.lstrip().startswith("#")]


def _describe(exc: ValidationError) -> tuple[str, str]:
    """One line naming the bad field and its value, never a secret: a field-level error shows its
    input unless the field is a secret; a model-level error (no location; its input is every
    setting, secrets included) gives only its message, which names the fields involved."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err.get("loc", ())]
    msg = str(err.get("msg", "invalid value"))
    if not loc:
        return f"invalid settings: {msg}", "settings"
    name = ".".join(loc)
    if loc[0] in SECRET_FIELDS:
        return f"invalid setting {name}: {msg}", name
    value = err.get("input")
    shown = value if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__
    if loc[0] in URL_FIELDS and isinstance(shown, str):
        shown = redact_url(shown)
    return f"invalid setting {name}={shown!r}: {msg}", name
