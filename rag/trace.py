"""What the answering stages decided, as small dataclasses. The retrieval stage returns a
`RetrievalTrace`; the pipeline fills one `AnswerTrace` per answer and serialises it into
`Answer.info` once, at the end (`to_info`); nothing reads `info` back to decide. The JSON shape of
`info` is unchanged: the retrieval keys (language, mode, top_k, limit, rrf_k, fusion,
fused_candidates, filter, transforms, warnings, rerank, versions), then
context, strategy, generated, generation, invalid_citations, uncited_sentences, verification,
grounding, answer_check, refusal_reason, refused_sources, unsupported_answer, each only when set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.version_stage import VersionDecision

# why an answer is the refusal sentence (`info["refusal_reason"]`)
NO_HITS, LOW_RERANK_SCORE, OFF_TOPIC_SOURCES = "no_hits", "low_rerank_score", "off_topic_sources"
MODEL_REFUSED, EMPTY_MODEL_ANSWER = "model_refused", "empty_model_answer"
UNSUPPORTED_ANSWER, OFF_TOPIC_ANSWER = "unsupported_answer", "off_topic_answer"
REFUSAL_REASONS = (NO_HITS, LOW_RERANK_SCORE, OFF_TOPIC_SOURCES, MODEL_REFUSED, EMPTY_MODEL_ANSWER,
                   UNSUPPORTED_ANSWER, OFF_TOPIC_ANSWER)


@dataclass(frozen=True)
class Refusal:
    """A refusal and its reason; after generation also what the refused answer said and cited."""

    reason: str
    text: str | None = None  # the model's answer that was refused (unsupported / off topic)
    cited: tuple[str, ...] | None = None  # chunk ids that answer cited

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"refusal_reason": self.reason}
        if self.cited is not None:
            out["refused_sources"] = list(self.cited)
        if self.text is not None:
            out["unsupported_answer"] = self.text
        return out


@dataclass(frozen=True)
class Checked:
    """What the checking stage found in a generated answer (rag/checking.py)."""

    invalid_citations: list[int]
    uncited_sentences: int | None = None  # None: the model refused, nothing was checked
    verification: dict[str, Any] | None = None
    grounding: dict[str, Any] | None = None
    answer_check: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"invalid_citations": self.invalid_citations}
        for key in ("uncited_sentences", "verification", "grounding", "answer_check"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class RerankDecision:
    """Whether the hits were reranked: the stage's cut (model, candidates, min_score, kept,
    dropped_below_min, best_score) and the query it scored against, or why not."""

    enabled: bool
    reason: str | None = None  # why reranking was off (turned off, no model, the model failed)
    cut: dict[str, Any] | None = None  # `RerankOutcome.info`
    query: str | None = None

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"enabled": self.enabled}
        if self.reason is not None:
            out["reason"] = self.reason
        out.update(self.cut or {})
        if self.query is not None:
            out["query"] = self.query
        return out


@dataclass(frozen=True)
class RetrievalTrace:
    """What the retrieval stage decided for one request (rag/retrieval_stage.py). `lists` and
    `weights` (the named lists searched and their weights) are not serialised into `info`; the
    lists' seconds are in the result's timings, keyed by list name."""

    language: str
    mode: str
    top_k: int
    limit: int
    rrf_k: int
    fusion: str
    fused_candidates: int
    filter: dict[str, Any] | None
    transforms: dict[str, Any]  # what condensing and the transforms did (`TransformLog.steps`)
    warnings: list[str]
    rerank: RerankDecision
    lists: tuple[str, ...] = ()
    weights: dict[str, float] = field(default_factory=dict)
    versions: VersionDecision | None = None  # what the version stage decided (rag/version_stage.py)

    def info(self) -> dict[str, Any]:
        out = {"language": self.language, "mode": self.mode, "top_k": self.top_k, "limit": self.limit,
               "rrf_k": self.rrf_k, "fusion": self.fusion, "fused_candidates": self.fused_candidates,
               "filter": self.filter, "transforms": self.transforms, "warnings": self.warnings,
               "rerank": self.rerank.info()}
        if self.versions is not None and self.versions.uses:
            out["versions"] = self.versions.info()
        return out


@dataclass
class AnswerTrace:
    """One answer's decisions, stage by stage."""

    language: str
    retrieval: RetrievalTrace | None = None  # None: the hits were given, not retrieved (`answer_from_hits`)
    context: dict[str, Any] | None = None  # packing and focusing (rag/context_builder.py)
    sources_check: dict[str, Any] | None = None  # the sources-about-the-question check, when it refused
    strategy: dict[str, Any] | None = None
    generated: bool | None = None
    generation: dict[str, Any] | None = None  # token counts of the call the text comes from
    checked: Checked | None = None
    refusal: Refusal | None = None

    @property
    def versions(self) -> VersionDecision | None:
        return None if self.retrieval is None else self.retrieval.versions

    def to_info(self) -> dict[str, Any]:
        out = {"language": self.language, **(self.retrieval.info() if self.retrieval is not None else {})}
        if self.context is not None:
            out["context"] = self.context
        if self.sources_check is not None:
            out["answer_check"] = self.sources_check
        for key in ("strategy", "generated", "generation"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.checked is not None:
            out.update(self.checked.info())
        if self.refusal is not None:
            out.update(self.refusal.info())
        return out
