"""The reranking stage: a cross-encoder scores the top fused candidates against the query in
one batched call; hits are re-sorted by that score (0..1), those under the minimum score are
dropped and the best `top_n` kept. The model itself is an adapter (`rag.adapters.rerankers`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.errors import ModelError
from rag.protocols import Reranker
from rag.types import Chunk, Hit

log = logging.getLogger(__name__)


def passage_text(chunk: Chunk) -> str:
    """What the cross-encoder reads: the document title and section path, then the chunk text."""
    heading = " > ".join(p for p in (chunk.title, *chunk.section_path) if p)
    return f"{heading}\n{chunk.text}" if heading and heading not in chunk.text[: len(heading) + 8] else chunk.text


@dataclass
class RerankOutcome:
    hits: list[Hit]
    info: dict[str, Any] = field(default_factory=dict)


class RerankStage:
    def __init__(self, reranker: Reranker, *, candidates: int = 20, min_score: float = 0.05) -> None:
        if candidates < 1:
            raise ValueError(f"rerank candidates must be >= 1, got {candidates}")
        self.reranker = reranker
        self.candidates = candidates
        self.min_score = min_score

    def apply(self, query: str, hits: Sequence[Hit], top_n: int) -> RerankOutcome:
        """Score the first `candidates` hits (already in fused order), sort by rerank score (ties:
        fused score, then chunk id), drop those under `min_score`, keep `top_n`. Hits beyond the
        candidate window are not returned: they were never scored."""
        pool = list(hits[: max(self.candidates, top_n)])
        info: dict[str, Any] = {"model": self.reranker.name, "candidates": len(pool), "min_score": self.min_score}
        if not pool:
            return RerankOutcome([], {**info, "kept": 0, "dropped_below_min": 0})
        scores = list(self.reranker.score(query, [passage_text(h.chunk) for h in pool]))
        if len(scores) != len(pool):
            raise ModelError(f"reranker {self.reranker.name} returned {len(scores)} scores for {len(pool)} passages")
        for hit, score in zip(pool, scores):
            value = float(score)
            hit.rerank_score = 0.0 if math.isnan(value) else min(max(value, 0.0), 1.0)
        ordered = sorted(pool, key=lambda h: (-(h.rerank_score or 0.0), -h.score, h.chunk.id))
        kept = [h for h in ordered if (h.rerank_score or 0.0) >= self.min_score]
        info.update(kept=min(len(kept), top_n), dropped_below_min=len(ordered) - len(kept),
                    best_score=ordered[0].rerank_score)
        log.debug("rerank: %d candidates, best %.3f, %d under %.2f", len(pool), ordered[0].rerank_score or 0.0,
                  len(ordered) - len(kept), self.min_score)
        return RerankOutcome(kept[:top_n], info)
