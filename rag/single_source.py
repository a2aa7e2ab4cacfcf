"""Reading one source when the ranking singles out its top hit (setting `context_single`).

A small model may answer better from source [1] alone when [1] holds the answer, and worse when
the answer is further down or spread over several sources. These rules guess from the ranking
which case a question is in:
- `agree`: every list that found the top hit (dense and BM25, for each query variant) ranked
  it first, and more than one list found it;
- `ratio>=R`: the top hit's score (rerank score when reranked, else fused) is at least R times
  the second's;
- `agree+ratio>=R`: both.
`benchmarks/sources_replay.py` replays each rule on a full run and a one-source run of the same
questions, so a rule is chosen on a dev half from two runs instead of one run per rule. With the
best source last (the default layout) none gained on the CMRC 2018 or COVID-QA dev halves
(docs/benchmarks.md): the setting is off, and reads faster where it fires."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.types import Hit

_RULE_RE = re.compile(r"(agree)|(?:(agree)\+)?ratio>=(\d+(?:\.\d+)?)")


def rule_text(text: str) -> str:
    """A rule as written, in the one form `parse` reads: lower case, no spaces
    (" Agree + ratio>=2" -> "agree+ratio>=2")."""
    return text.strip().lower().replace(" ", "")


@dataclass(frozen=True)
class SingleRule:
    agree: bool = False
    ratio: float = 0.0  # 0: no condition on the scores

    @classmethod
    def parse(cls, text: str) -> SingleRule | None:
        """"off" -> None; "agree", "ratio>=1.2", "agree+ratio>=1.2" -> the rule. ValueError otherwise."""
        text = rule_text(text)
        if text == "off":
            return None
        match = _RULE_RE.fullmatch(text)
        ratio = float(match.group(3)) if match is not None and match.group(3) is not None else 0.0
        if match is None or (match.group(3) is not None and ratio <= 1.0):
            raise ValueError(f"context_single must be off, agree, ratio>=R or agree+ratio>=R with R > 1, got {text!r}")
        return cls(agree=match.group(1) is not None or match.group(2) is not None, ratio=ratio)

    def fires(self, top_ranks: Sequence[int], top: float, second: float | None) -> bool:
        """Whether the top hit alone is read: `top_ranks` are its ranks in the lists that found
        it, `top` and `second` the first two scores (None when there is no second hit)."""
        if self.agree and not (len(top_ranks) > 1 and all(rank == 1 for rank in top_ranks)):
            return False
        if self.ratio and second is not None and second > 0 and top < self.ratio * second:
            return False
        return True

    def singles_out(self, hits: Sequence[Hit]) -> bool:
        """`fires` on a ranking of hits (False for an empty one)."""
        if not hits:
            return False
        second = hits[1].final_score if len(hits) > 1 else None
        return self.fires([p.rank for p in hits[0].provenance], hits[0].final_score, second)
