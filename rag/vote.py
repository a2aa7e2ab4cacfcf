"""Answer by agreement (`answer_vote`): the one-call answer is written three times from the same
retrieved sources, each time laid out differently, and the answer that agrees most with the other
two is kept. A small model's greedy answer flips with the layout of its prompt (on the CMRC 2018
dev half about one question in six changes between two layouts, as often to wrong as to right);
the answer two layouts reach was expected to be right more often. Measured with the bundled 0.5B
model: +0.067 accuracy on the dev half, but +0.020 [-0.050, +0.090] on 100 held-out questions with
more wrong answers (it answers more of what the defaults refuse), at 2.5x the time: off by default
(docs/benchmarks.md, "More levers on the CMRC 2018 dev half").

The three prompts: the configured one; the same sources with the question stated before them too
(or not, when `question_first` is already on); and only the sources that each state enough of the
question's subject terms (`answer_check.sources_about`), or the better half of them when all do.
Agreement between two answers is the Jaccard overlap of their word sets (`rag.text.tokenize`:
jieba words for Chinese, stems for English), citation markers left out; a refusal agrees with
nothing. The first layout wins ties. The kept answer then goes through the same citation
verification and answer check as any other."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from rag.answer_check import sources_about
from rag.citations import strip_markers
from rag.generation import Layout, PackedContext, build_messages, pack_context
from rag.llm_timing import Generation
from rag.strategies import is_refusal
from rag.text import tokenize
from rag.types import Hit

@dataclass
class Candidate:
    layout: str
    packed: PackedContext
    messages: list[dict[str, str]]
    generation: Generation | None = None

    @property
    def text(self) -> str:
        return self.generation.text if self.generation is not None else ""


def candidates(question: str, packed: PackedContext, lang: str, layout: Layout,
               min_coverage: float) -> list[Candidate]:
    """The three prompts of the module docstring, over `packed` (the configured packing) laid out
    as `layout` says (the second with `question_first` flipped)."""
    flipped = replace(layout, question_first=not layout.question_first)
    out = [Candidate("configured", packed, build_messages(question, packed.sources, lang, layout)),
           Candidate("question_first", packed, build_messages(question, packed.sources, lang, flipped))]
    fewer = _fewer(question, packed, lang, min_coverage)
    out.append(Candidate("fewer_sources", fewer, build_messages(question, fewer.sources, lang, layout)))
    return out


def _fewer(question: str, packed: PackedContext, lang: str, min_coverage: float) -> PackedContext:
    """The packing of the sources about the question, or of the better half when all (or none) are."""
    by_id = {h.chunk.id: h for h in packed.hits}
    hits: list[Hit] = [by_id[s.chunk_id] for s in packed.sources]
    about = sources_about(question, packed.sources, min_coverage) if min_coverage > 0 else []
    if about and len(about) < len(packed.sources):
        keep = [hits[s.number - 1] for s in about]
    else:
        keep = hits[: max(1, (len(hits) + 1) // 2)]
    return pack_context(keep, budget=packed.budget, max_sources=len(keep), lang=lang)


def agreement(a: str, b: str) -> float:
    """Jaccard overlap of the two answers' word sets (markers left out); 0 for a refusal."""
    if is_refusal(a) or is_refusal(b):
        return 0.0
    wa, wb = set(tokenize(strip_markers(a))), set(tokenize(strip_markers(b)))
    return len(wa & wb) / len(wa | wb) if wa | wb else 0.0


def most_agreed(texts: Sequence[str]) -> tuple[int, list[float]]:
    """The index of the text that agrees most with the others (the first on a tie), and each
    text's summed agreement."""
    scores = [sum(agreement(t, u) for j, u in enumerate(texts) if j != i) for i, t in enumerate(texts)]
    return max(range(len(texts)), key=lambda i: (scores[i], -i)), scores


def vote(cands: list[Candidate], generate: Callable[[list[dict[str, str]]], Generation],
         parallel: int = 1) -> tuple[Candidate, dict]:
    """Write every candidate's answer (`generate(messages)`, up to `parallel` calls at once: an
    endpoint serves them side by side, the embedded model one after the other) and keep the most
    agreed one; what the vote saw, for `info["vote"]`."""
    if parallel > 1:
        with ThreadPoolExecutor(max_workers=min(parallel, len(cands))) as pool:
            generations = list(pool.map(lambda c: generate(c.messages), cands))
    else:
        generations = [generate(c.messages) for c in cands]
    for cand, generation in zip(cands, generations, strict=True):
        cand.generation = generation
    best, scores = most_agreed([c.text for c in cands])
    info = {"chosen": cands[best].layout,
            "candidates": [{"layout": c.layout, "sources": len(c.packed.sources), "text": c.text,
                            "agreement": round(score, 3)} for c, score in zip(cands, scores)]}
    return cands[best], info
