"""Request and response bodies. Responses carry the shapes of `rag.serialize.answer_to_dict`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag.chunk_edits import EDIT_MODES, KEEP, MAX_TERMS, MAX_TEXT
from rag.names import CHUNK_OVERLAP_RANGE, CHUNK_SIZE_RANGE, CHUNKERS, HYBRID, MODES, STRATEGIES

JOB_KINDS = ("upload", "url", "reparse", "reindex")  # api/jobs.py: what a job does

KB_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CONV_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
FilterValue = str | int | float | list[str | int | float]
Filters = dict[str, FilterValue] | list[str]

_FILTERS_DOC = ("Metadata filter. An object `{\"source\": \"a.pdf\" | [\"a.pdf\", \"b.md\"], \"doc_id\": ..., "
                "\"team\": \"hr\" (any other key is a tag), \"mtime_from\": \"2024-01-01\" | unix seconds, "
                "\"mtime_to\": ...}` or a list of `key=value` strings. All given conditions must match.")
_TRANSFORMS_DOC = "Query transforms: rewrite, multi_query, hyde, step_back, sub_question (default from settings)."


class Turn(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=100_000)


class RetrievalOptions(BaseModel):
    kb: str | None = Field(None, pattern=KB_PATTERN, description="Knowledge base (default: RAG_DEFAULT_KB).")
    filters: Filters | None = Field(None, description=_FILTERS_DOC)
    top_k: int | None = Field(None, ge=1, le=1000, description="Candidates per list and query variant.")
    limit: int | None = Field(None, ge=1, le=50, description="Sources kept after fusion/reranking.")
    transforms: list[str] | None = Field(None, max_length=5, description=_TRANSFORMS_DOC)
    rerank: bool | None = Field(None, description="Cross-encoder reranking (default: on when a model is present).")
    mode: Literal[MODES] = HYBRID
    strategy: Literal[STRATEGIES] | None = Field(
        None, description="How the sources reach the model: stuff (one prompt), map_reduce, refine, map_rerank, or "
                          "auto (stuff when they fit, else map_reduce). Default: RAG_STRATEGY.")
    collection_questions: bool | None = Field(
        None, description="Answer questions about the collection itself (how many documents, which files "
                          "mention X, when was X updated) from the catalog. Default: RAG_COLLECTION_QUESTIONS.")
    prefer_latest: bool | None = Field(
        None, description="Of several versions of a document (\"policy 2023\", \"policy 2024\"), use the newest "
                          "found unless the question names another. Default: RAG_PREFER_LATEST_VERSION.")
    stream: bool = Field(False, description="Answer as Server-Sent Events: retrieval, token*, sources, citations, "
                                           "done (or error).")
    generate: bool = Field(True, description="false: retrieval only (no LLM call); sources are returned.")
    include_hits: bool = Field(False, description="Add the ranked hits with their provenance (debugging).")
    retrieval_on_error: bool = Field(False, description="When the LLM is unreachable (503), include the retrieval "
                                                        "results in the error body.")


class QueryRequest(RetrievalOptions):
    question: str = Field(min_length=1, max_length=4000)
    history: list[Turn] | None = Field(None, max_length=100, description="Earlier turns (stateless chat).")


class ChatRequest(RetrievalOptions):
    message: str = Field(min_length=1, max_length=4000)
    conversation_id: str | None = Field(None, pattern=CONV_PATTERN, description="Continue this conversation; "
                                        "omitted: a new one (its id is in the response). An unknown id starts a "
                                        "conversation with that id.")


class SourceOut(BaseModel):
    number: int
    chunk_id: str
    doc_id: str
    document: str
    title: str
    section_path: list[str]
    section: str
    page: int | None
    pages: list[int] = []  # every page the source covers (page: where its first cited sentence is)
    start: int
    end: int
    snippet: str
    text: str
    score: float
    rerank_score: float | None = None
    ocr: bool = False  # the text was recognised from a scanned page or an image
    ocr_confidence: float | None = None
    cited: bool | None = None


class CitationOut(BaseModel):
    number: int
    source_number: int
    chunk_id: str
    sentence: str
    sentence_start: int
    sentence_end: int
    support: float | None = None
    supported: bool | None = None
    document: str | None = None
    title: str | None = None
    section: str | None = None
    page: int | None = None
    start: int | None = None
    end: int | None = None
    snippet: str | None = None


class QueryResponse(BaseModel):
    kb: str
    question: str
    answer: str = Field(description="The model's answer with only the `[n]` markers the model wrote itself "
                        "(normalised; numbers that point at no source removed): it may have none. Show "
                        "`answer_with_citations` to readers.")
    answer_with_citations: str = Field("", description="`answer` plus a `[n]` marker after every claim the "
                                       "verifier attributed to a source (`citations[].origin: attributed`): the "
                                       "text to display.")
    refused: bool
    citations: list[CitationOut]
    sources: list[SourceOut]
    timings: dict[str, float]
    standalone_question: str | None = None
    query_variants: list[dict[str, Any]] = []
    rerank_enabled: bool
    model: str
    info: dict[str, Any] = {}
    hits: list[dict[str, Any]] | None = None


class ChatResponse(QueryResponse):
    conversation_id: str


class MessageOut(BaseModel):
    role: str
    content: str
    created_at: float
    citations: list[dict[str, Any]] | None = None
    sources: list[dict[str, Any]] | None = None
    refused: bool | None = None
    kb: str | None = None


class ConversationOut(BaseModel):
    id: str
    kb: str
    title: str
    created_at: float
    updated_at: float
    messages: list[MessageOut] | None = None


class KbCreate(BaseModel):
    name: str = Field(pattern=KB_PATTERN)
    description: str = Field("", max_length=2000)


class KbOut(BaseModel):
    name: str
    embed_model: str
    dim: int
    created_at: float
    description: str = ""
    documents: int
    chunks: int
    bytes: int
    reembed_needed: bool = Field(False, description="Built with another embedding model or dimension than the "
                                                    "server's: re-embed it (`POST /v1/kbs/{kb}/reindex`)")


class CheckOut(BaseModel):
    """`GET /v1/kbs/{kb}/check`: chunk ids the catalog, the vector store and BM25 disagree on, and
    what belongs to no knowledge base (orphan collections and BM25 indexes, interrupted drops)."""

    kb: str
    ok: bool
    catalog: int
    vectors: int
    lexical: int
    missing_in_vectors: list[str]
    missing_in_lexical: list[str]
    extra_in_vectors: list[str]
    extra_in_lexical: list[str]
    pending_documents: list[str]
    orphan_collections: list[str]
    orphan_lexical: list[str]
    half_dropped: list[str]


class RepairOut(BaseModel):
    """`POST /v1/kbs/{kb}/repair`: what was repaired, per category, and the check run afterwards."""

    kb: str
    changed: bool
    finished_drops: list[str]
    rolled_back: list[str] = Field(description="Pending documents put back to their indexed version.")
    removed_pending: list[str] = Field(description="Pending documents without an indexed version, removed.")
    finished_removals: list[str]
    garbage_deleted: int
    extra_deleted: int
    lexical_restored: int
    removed_missing: list[str] = Field(description="Documents whose vectors were lost, removed: ingest them again.")
    orphans_dropped: list[str]
    recovery: str | None = Field(None, description="What the vector store's own recovery did (reloaded or "
                                 "rebuilt the collection, points recovered and lost), when it had to do any.")
    after: CheckOut


class DocumentOut(BaseModel):
    doc_id: str
    source: str
    title: str
    format: str
    size: int
    mtime: float
    state: str
    chunks: int
    tags: dict[str, str]
    ingested_at: float
    uploaded: bool


class DocumentPatch(BaseModel):
    """Tags and title of a document, edited after its upload; at least one field."""

    model_config = ConfigDict(extra="forbid")
    tags: dict[str, str] | None = Field(None, description="Replace every tag with these (`{}` removes all)")
    add_tags: dict[str, str] = Field(default_factory=dict, description="Set these tags, keeping the others")
    remove_tags: list[str] = Field(default_factory=list, max_length=100, description="Remove the tags with these keys")
    title: str | None = Field(None, min_length=1, max_length=500)


class DocumentsBulk(BaseModel):
    """One action on many documents of a knowledge base: `delete` them, or `tag` them (set `tags`,
    remove the `remove_tags` keys)."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["delete", "tag"]
    doc_ids: list[str] = Field(min_length=1, max_length=1000)
    tags: dict[str, str] = Field(default_factory=dict, description="tag: set these tags, keeping the others")
    remove_tags: list[str] = Field(default_factory=list, max_length=100, description="tag: remove these keys")


class BulkItem(BaseModel):
    doc_id: str
    status: Literal["deleted", "tagged", "not_found"]
    source: str | None = None
    chunks_removed: int = 0
    tags: dict[str, str] | None = None


class BulkResult(BaseModel):
    action: str
    done: int = Field(description="Documents deleted or tagged")
    not_found: int
    results: list[BulkItem] = Field(description="One per distinct doc id, in the order given")


class DocumentDeleted(BaseModel):
    doc_id: str
    source: str
    chunks_removed: int


class JobOut(BaseModel):
    id: str
    kb: str
    status: Literal["queued", "running", "interrupted", "succeeded", "partial", "failed"]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, int]
    files: list[dict[str, Any]]
    errors: list[dict[str, str]]
    tags: dict[str, str] = {}
    edits: Literal[EDIT_MODES] = KEEP  # what re-ingesting a changed file did with its chunk edits
    summary: dict[str, Any] | None = None
    error: str | None = None
    recovery: str | None = None  # set when the server stopped during the job and resumed it at restart
    kind: Literal[JOB_KINDS] = "upload"
    chunking: dict[str, Any] = Field(default_factory=dict, description="A re-parse's chunking overrides")
    retry_of: str | None = Field(None, description="The job whose failed files this one retries")
    current_file: str | None = Field(None, description="The file last worked on (running)")


class ReindexAccepted(BaseModel):
    job_id: str
    kb: str
    status: str
    status_url: str
    embed_model: str = Field(description="The model the knowledge base records now")
    dim: int
    to_embed_model: str = Field(description="The server's model it is re-embedded with")
    to_dim: int | None
    reembed_needed: bool = Field(description="False: the models are the same, and it is re-embedded with the same "
                                             "model anyway (a rebuilt collection)")
    message: str


class JobAccepted(BaseModel):
    job_id: str
    kb: str
    status: str
    status_url: str
    files: list[dict[str, Any]]
    retry_of: str | None = None
    not_retried: list[dict[str, str]] = Field(default_factory=list,
                                              description="A retry: the failed files that could not be, and why")


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    read: list[str] = Field(default_factory=list, description="Knowledge bases this key may query ('*' = all).")
    write: list[str] = Field(default_factory=list, description="Knowledge bases it may change (implies read).")


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    read: list[str]
    write: list[str]
    created_at: float


class KeyCreated(KeyOut):
    key: str = Field(description="The secret. Shown only now: store it; the server keeps only its hash.")


# -- OpenAI-compatible ----------------------------------------------------------------------------

class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat completions body; `model` names the knowledge base ("default" or "rag" = the
    configured default). Unknown OpenAI parameters are accepted and ignored. The optional extra
    `rag` object takes retrieval options (filters, top_k, limit, transforms, rerank, mode) and
    `append_sources` (add a "Sources:" list to the message text, for UIs that show only text)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field("default", max_length=200)
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    rag: dict[str, Any] | None = None


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rag"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


# -- model serving (api/routes/model_serving.py) --------------------------------------------------

MAX_EMBED_INPUTS = 2048  # texts in one /v1/embeddings request (OpenAI's limit)
MAX_RERANK_TEXTS = 1000  # passages in one /v1/rerank request


class EmbeddingRequest(BaseModel):
    """The OpenAI embeddings body. `model`, when given, must be the loaded embedder's name (`GET
    /v1/system` shows it). `input_type` (as NVIDIA NIM has it) picks the model's query or passage
    encoding (bge's instruction, e5's prefixes); without it texts are embedded as passages, which for
    bge and most models is the text as given. Other OpenAI parameters (`user`) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    input: str | list[str] = Field(description="One text or a list of texts (token-id arrays are not accepted).")
    model: str | None = Field(None, max_length=500)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Must be the model's dimension when given.")
    input_type: Literal["query", "passage"] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _some_texts(cls, value: Any) -> Any:
        """One error naming `input` (not one per member of the union)."""
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ValueError("give a text or a list of texts (token-id arrays are not accepted)")
        if not 1 <= len(value) <= MAX_EMBED_INPUTS:
            raise ValueError(f"give 1 to {MAX_EMBED_INPUTS} texts, got {len(value)}")
        return value


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="L2-normalised float32 values, or their bytes in base64.")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsage


class RerankRequest(BaseModel):
    """TEI's `/rerank` body (`texts`, answered by a list of {index, score}) or the Cohere/Jina one
    (`documents`, answered by {results: [{index, relevance_score}]}); exactly one of the two. Scores
    are in 0..1 (`raw_scores` true is refused). `model`, when given, must be the loaded reranker's name."""

    model_config = ConfigDict(extra="allow")
    query: str = Field(min_length=1, max_length=100_000)
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_RERANK_TEXTS)
    documents: list[str] | None = Field(None, min_length=1, max_length=MAX_RERANK_TEXTS)
    model: str | None = Field(None, max_length=500)
    raw_scores: bool = False
    return_text: bool = False
    return_documents: bool = False
    top_n: int | None = Field(None, ge=1)
    truncate: bool | None = None


class RerankHit(BaseModel):
    index: int
    score: float
    text: str | None = None


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]


class ChunkEditOut(BaseModel):
    """A chunk's edit (chunk curation), when it has one."""

    edited: bool = Field(description="Its text was edited (`original_text`: the text the chunker gave it)")
    original_text: str | None = None
    disabled: bool = False
    manual: bool = Field(False, description="Added by hand to the document")
    keywords: list[str] = Field([], description="Matched by retrieval with the chunk's text (BM25 and dense)")
    questions: list[str] = Field([], description="Questions it answers, matched by retrieval like the keywords")
    updated_at: float


class ChunkOut(BaseModel):
    chunk_id: str
    text: str
    start: int
    end: int
    section_path: list[str]
    page: int | None
    kind: str
    embed_text: str | None = None
    questions: list[str] = Field([], description="Questions generated for it at ingest (`--generate-questions`)")
    disabled: bool = Field(False, description="Kept, but never retrieved")
    edit: ChunkEditOut | None = None


class ChunkCreate(BaseModel):
    """A chunk added by hand to a document: `text`, or `question` and `answer` (a Q&A chunk)."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    question: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    answer: str | None = Field(None, min_length=1, max_length=MAX_TEXT)


class ChunkPatchIn(BaseModel):
    """A chunk's edit: its text (re-embedded and re-indexed at once), disabled, its keywords and
    questions (each list replaces the one before; `[]` removes them); at least one."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    disabled: bool | None = None
    keywords: list[str] | None = Field(None, max_length=MAX_TERMS, description="Words retrieval also matches")
    questions: list[str] | None = Field(None, max_length=MAX_TERMS, description="Questions retrieval also matches")


class DocumentChunks(BaseModel):
    kb: str
    doc_id: str
    source: str
    title: str
    state: str
    chunks: list[ChunkOut]
    missing: int = Field(0, description="Chunk ids of this page the catalog lists but the vector store does not hold")
    total: int = Field(0, description="The document's chunks, all pages")
    offset: int = 0


class DocumentText(BaseModel):
    kb: str
    doc_id: str
    source: str
    title: str
    format: str
    text: str


class SystemInfo(BaseModel):
    settings: dict[str, Any]
    embedder: dict[str, Any]
    reranker: dict[str, Any]
    llm: dict[str, Any]
    vector_backend: str
    lexical_backend: str
    ready: bool
    admin: bool


class ChunkingFields(BaseModel):
    """Chunking fields of a knowledge base's settings or of one re-parse; left out (or null in a
    PATCH): unchanged (or back to the server's setting)."""

    model_config = ConfigDict(extra="forbid")
    chunker: Literal[CHUNKERS] | None = Field(None, description="recursive | semantic | qa (= recursive: Q&A rows "
                                              "are one chunk each with any chunker)")
    chunk_size: int | None = Field(None, ge=CHUNK_SIZE_RANGE[0], le=CHUNK_SIZE_RANGE[1],
                                   description="Characters per chunk (the semantic chunker's maximum)")
    chunk_overlap: int | None = Field(None, ge=CHUNK_OVERLAP_RANGE[0], le=CHUNK_OVERLAP_RANGE[1],
                                      description="Characters of overlap; smaller than the chunk size")
    ocr: bool | None = Field(None, description="OCR scanned PDF pages and images")


class KbSettingsPatch(ChunkingFields):
    tags: dict[str, str] | None = Field(None, description="key=value tags given to files ingested from now on")


class KbSettingsOut(BaseModel):
    """A knowledge base's ingest settings as they apply now (its own, else the server's)."""

    kb: str
    chunker: str
    chunk_size: int
    chunk_overlap: int
    ocr: bool
    tags: dict[str, str]
    embed_model: str = Field(description="The embedding model the knowledge base was built with (read-only)")
    dim: int
    own: list[str] = Field(description="The fields the knowledge base sets itself; the others are the server's")
    server: dict[str, Any] = Field(description="The server's settings (RAG_CHUNKER, ...) the others come from")
    stale_documents: int = Field(description="Indexed documents chunked before the last chunking change: "
                                             "re-parse them to apply it")
    reparse_needed: bool = Field(description="A chunking change waits for a re-parse of the documents above "
                                             "(re-read, re-chunked, embedded with the same model)")
    reembed_needed: bool = Field(False, description="The server's embedding model (`server_embed_model`, "
                                 "`server_dim`) differs from `embed_model`/`dim`: the knowledge base cannot be queried "
                                 "or written until it is re-embedded (`POST /v1/kbs/{kb}/reindex`)")
    server_embed_model: str = Field("", description="The server's configured embedding model (RAG_EMBED_MODEL)")
    server_dim: int | None = Field(None, description="Its dimension (null: it could not be read)")
    reembed_message: str = Field("", description="What to do when `reembed_needed`")
    message: str = ""


class ReparseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_ids: list[str] = Field(default_factory=list, max_length=1000,
                               description="The documents to re-parse (empty with `all`)")
    all: bool = Field(False, description="Every uploaded document of the knowledge base")
    settings: ChunkingFields | None = Field(None, description="Chunking for this re-parse only, over the knowledge "
                                                              "base's settings")


class DocError(BaseModel):
    doc_id: str
    error: Literal["not_found", "not_uploaded", "file_missing"]
    message: str


class ReparseAccepted(BaseModel):
    job_id: str | None = Field(description="The re-parse job (null when no document could be re-parsed)")
    kb: str
    status_url: str | None = None
    chunker: str
    chunk_size: int
    chunk_overlap: int
    ocr: bool
    documents: list[dict[str, Any]] = Field(description="{doc_id, source} of each document queued")
    errors: list[DocError] = Field(description="The documents that cannot be re-parsed, and why")


class UrlImport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2000, description="An http(s) URL of one page or file")
    tags: dict[str, str] = Field(default_factory=dict, description="key=value tags for the imported document")


class UsageDay(BaseModel):
    day: str = Field(description="UTC date, YYYY-MM-DD")
    questions: int = Field(description="Answers generated from the knowledge base")
    refusals: int = Field(description="Of those, answers that refused (nothing in the documents supported one)")
    cited_documents: int = Field(description="Distinct documents the answers cited")


class UsageDoc(BaseModel):
    doc_id: str
    source: str | None = Field(description="null: the document has been removed since")
    answers: int = Field(0, description="Answers that cited it in the period")


class UsageOut(BaseModel):
    kb: str
    since: str
    days: list[UsageDay]
    questions: int
    refusals: int
    top_cited: list[UsageDoc]
    never_cited: list[UsageDoc] = Field(description="Indexed documents no answer cited in the period, by name "
                                                    "(one page: limit, offset)")
    never_cited_total: int
