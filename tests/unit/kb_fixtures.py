"""A small real knowledge base for query-path tests: real vector store (qdrant-client in memory or
Qdrant Edge on disk) and real BM25 index, deterministic HashEmbedder vectors, a scripted LLM and
deterministic rerankers. Built through `rag.factory.Services`, as production code is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rag import prompts, strategy_prompts
from rag.factory import UNSET, Services
from rag.settings import Settings
from rag.testing import HashEmbedder
from rag.text import tokenize
from rag.types import Chunk

KB = "handbook"
JAN_2024 = 1704067200.0  # 2024-01-01T00:00:00Z
JUN_2024 = 1717200000.0  # 2024-06-01T00:00:00Z

# (chunk id, source, title, section path, page, tags, mtime, text)
DOCS: list[tuple[str, str, str, tuple[str, ...], int | None, dict[str, str], float, str]] = [
    ("warranty", "acme-x200-manual.pdf", "Acme X200 Manual", ("Warranty",), 12, {"team": "support"}, JAN_2024,
     "The Acme X200 warranty lasts two years from the date of purchase. The warranty covers manufacturing "
     "defects. It does not cover water damage or a dropped device."),
    ("battery", "acme-x200-manual.pdf", "Acme X200 Manual", ("Battery",), 7, {"team": "support"}, JAN_2024,
     "The Acme X200 battery lasts about ten hours of continuous use. Charge the battery with the supplied "
     "USB-C cable. A full charge takes ninety minutes."),
    ("reset", "acme-x200-manual.pdf", "Acme X200 Manual", ("Troubleshooting", "Reset"), 15, {"team": "support"},
     JAN_2024, "To reset the Acme X200, hold the power button for fifteen seconds. The device restarts with "
     "factory settings. Back up your data before a reset."),
    ("passwords", "security-policy.html", "Security Policy", ("Passwords",), None, {"team": "it"}, JUN_2024,
     "Passwords must have at least twelve characters. Employees change their passwords every ninety days. "
     "Never share a password with a colleague."),
    ("vpn", "security-policy.html", "Security Policy", ("Remote access",), None, {"team": "it"}, JUN_2024,
     "Remote access to the office network requires the company VPN. The VPN client asks for a one-time code "
     "from the authenticator app."),
    ("leave", "员工休假制度.md", "员工休假制度", ("年假",), None, {"team": "hr"}, JUN_2024,
     "员工每年享有十五天带薪年假。年假需要提前两周向直属经理申请。未使用的年假可以顺延到下一年第一季度。"),
    ("sick", "员工休假制度.md", "员工休假制度", ("病假",), None, {"team": "hr"}, JUN_2024,
     "员工请病假超过三天需要提供医院证明。病假期间工资按基本工资的百分之八十发放。"),
]


def make_chunks(kb: str = KB) -> list[Chunk]:
    chunks = []
    offsets: dict[str, int] = {}
    for cid, source, title, section, page, tags, mtime, text in DOCS:
        start = offsets.get(source, 0)
        offsets[source] = start + len(text) + 2
        chunks.append(Chunk(id=cid, kb=kb, doc_id=f"doc-{source}", source=source, text=text, start=start,
                            end=start + len(text), title=title, section_path=section, page=page, tags=dict(tags),
                            mtime=mtime))
    return chunks


def build_services(tmp_path: Path, *, backend: str = "local", llm: Any = UNSET, reranker: Any = None,
                   chunks: Sequence[Chunk] | None = None, dim: int = 64, embedder: Any = None,
                   **settings: Any) -> Services:
    """Services over a populated knowledge base `KB` under `tmp_path`. `reranker=None` means no
    reranker model (the production default here), `llm` left out the one settings name. `dim=256`
    matches `RAG_EMBED_MODEL=hash`; `embedder` replaces the HashEmbedder (real-model tests)."""
    config = Settings(_env_file=None, data_dir=tmp_path / "data", vector_backend=backend, lexical_backend="local",
                      **settings)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = UNSET
    if backend == "local":
        from rag.adapters.qdrant_store import QdrantClientStore

        store = QdrantClientStore.memory()  # no disk
    services = Services(config, embedder=embedder or HashEmbedder(dim=dim), llm=llm, reranker=reranker, store=store)
    kb = services.kbs.open_or_create(KB)
    chunks = list(chunks if chunks is not None else make_chunks())
    kb.write_documents(chunks, services.embedder.encode_corpus([c.match_text for c in chunks]))
    return services


class OverlapReranker:
    """Deterministic cross-encoder stand-in: the share of query words found in the passage."""

    def __init__(self, name: str = "overlap-reranker") -> None:
        self._name = name
        self.calls: list[tuple[str, list[str]]] = []

    @property
    def name(self) -> str:
        return self._name

    def warm_up(self) -> None:
        """Nothing to load."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append((query, list(passages)))
        words = set(tokenize(query))
        return [len(words & set(tokenize(p))) / len(words) if words else 0.0 for p in passages]


class TableReranker:
    """Scores passages by the first key (a phrase) they contain; `default` otherwise."""

    def __init__(self, table: dict[str, float], default: float = 0.0) -> None:
        self.table = table
        self.default = default
        self.calls: list[tuple[str, list[str]]] = []

    @property
    def name(self) -> str:
        return "table-reranker"

    def warm_up(self) -> None:
        """Nothing to load."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append((query, list(passages)))
        return [next((v for k, v in self.table.items() if k in p), self.default) for p in passages]


def kind_of(messages: list[dict[str, str]]) -> str:
    """Which prompt a chat call used: "answer", "condense", "rewrite", "multi_query", ..., and the
    strategy steps "map", "reduce", "refine", "map_rerank"."""
    system = messages[0]["content"]
    if system in prompts.ANSWER_SYSTEM.values():
        return "answer"
    for name, template in [("condense", prompts.CONDENSE), *prompts.TRANSFORM_PROMPTS.items(),
                           *strategy_prompts.STRATEGY_PROMPTS.items()]:
        if any(system.startswith(sys_text.split("{")[0][:60]) for sys_text, _ in template.values()):
            return name
    raise AssertionError(f"unknown prompt: {system[:80]}")


def router(**replies: str | BaseException | Callable[[list[dict[str, str]]], str]):
    """A ScriptedLLM reply function answering each prompt kind with its own reply."""

    def reply(messages: list[dict[str, str]]) -> str:
        kind = kind_of(messages)
        if kind not in replies:
            raise AssertionError(f"no scripted reply for a {kind!r} prompt")
        value = replies[kind]
        if isinstance(value, BaseException):
            raise value
        return value(messages) if callable(value) else value

    return reply
