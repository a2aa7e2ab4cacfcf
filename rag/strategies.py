"""Combine strategies: how the retrieved sources reach the model when they may not fit in one prompt.

- stuff: every source in one answer prompt (token-budgeted by `rag.generation.pack_context`);
- map_reduce: each group of sources (at most `group_sources`, sized to the token budget) gives a
  partial answer in parallel; the partial answers, with their `[n]` markers, are combined by a
  reduce call (collapsed in rounds when they do not fit one prompt); a single non-refusing
  partial answer is the answer itself. The partial answers a source supports are kept
  (`FinalStep.fallback_text`): when the reduce call's answer fails the pipeline's checks, they
  are the answer;
- refine: an answer from the first group, improved with each next group;
- map_rerank: one answer per source (with a self-rated "Score: 0-100"); the candidates are ranked
  by what can be measured: the citation verifier's support of each by its source and the share
  of the question's subject terms it states with its source (`candidate_coverage`); the
  self-score only breaks ties (a small model's self-ratings are noise). A candidate its source
  does not support is never chosen; with none left the answer is the refusal. Every candidate
  (its reply cut to `RERANK_REPLY_CHARS`, scores, rank) is kept in the strategy info;
- auto: stuff when the sources fit the budget whole; else the strategy `AUTO_WHEN_TOO_LONG`
  names for the model in use (stuff reads the sources that fit, trimmed).
Each strategy's info says why it ran (`Choice.reason`).

Sources are numbered once, over all retrieved hits, and keep that number in every step, so the
final answer's markers name the sources the reader sees and `AnswerChecker.after` verifies them
against those. The strategy runs every intermediate call and returns the final step (messages
for the last call, or the chosen text for map_rerank), which the pipeline calls or streams."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from rag import prompts, strategy_prompts
from rag.answer_check import candidate_coverage
from rag.citations import Support
from rag.errors import InvalidRequest
from rag.generation import Layout, PackedContext, _as_chunk, build_messages, estimate_tokens, pack_context, source_block
from rag.llm_timing import Generation, generate_timed
from rag.models import LARGE_LLM, SMALL_LLM
from rag.names import AUTO, MAP_REDUCE, MAP_RERANK, REFINE, STRATEGIES, STUFF
from rag.protocols import LLM
from rag.text import split_sentences
from rag.types import Hit, Source

MAX_COLLAPSE_ROUNDS = 3
_MARKER = re.compile(r"[ \t]*\[(\d{1,3})\]")
_SCORE = re.compile(r"(?:score|分数|评分|得分)\s*[:：]?\s*(\d{1,3})", re.IGNORECASE)
RERANK_REPLY_CHARS = 500  # of each map_rerank candidate's raw reply kept in the strategy info

# auto, when the sources do not fit one prompt whole: the strategy per model in use, the embedded
# model's key (RAG_LLM_EMBEDDED) or None for any other (an OpenAI-compatible endpoint, a local
# model or GGUF), and the measurement behind it (docs/benchmarks.md, "The embedded model, follow-ups
# and strategies" and "Answer strategies")
AUTO_WHEN_TOO_LONG: dict[str | None, str] = {SMALL_LLM.key: STUFF, LARGE_LLM.key: STUFF, None: MAP_REDUCE}
AUTO_WHY: dict[str | None, str] = {
    SMALL_LLM.key: "map_reduce is measured to answer worse than stuff with this model",
    LARGE_LLM.key: "map_reduce answered no better than stuff with this model, cited worse and took 3x the time",
    None: "map_reduce reads every source (not measured against stuff for this model)",
}
# strategies measured to answer worse than stuff per embedded model: a request for one says so in its reason
MEASURED_WORSE: dict[str, tuple[str, ...]] = {SMALL_LLM.key: (MAP_REDUCE, REFINE), LARGE_LLM.key: (REFINE,)}


def check_strategy(name: str | None, default: str = AUTO) -> str:
    value = (name or default).strip().lower()
    if value not in STRATEGIES:
        raise InvalidRequest(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}", field="strategy")
    return value


def is_refusal(text: str) -> bool:
    head = text.strip().lower()
    return not head or any(head.startswith(r.lower().rstrip(".。")) for r in prompts.REFUSAL.values())


@dataclass(frozen=True)
class Choice:
    """The strategy to run and why (the strategy info's `reason`)."""

    name: str
    reason: str


def resolve(strategy: str, packed: PackedContext, model: str | None = None) -> Choice:
    """The strategy to run: `auto` is stuff when every source fit the budget whole, else the one
    `AUTO_WHEN_TOO_LONG` names for `model` (the embedded model's key, None for another model)."""
    if strategy != AUTO:
        if strategy in MEASURED_WORSE.get(model or "", ()):
            return Choice(strategy, f"requested; {strategy} is measured to answer worse than stuff with this model "
                                    "(docs/benchmarks.md): a stronger LLM is advised")
        return Choice(strategy, "requested")
    if packed.left_out == 0 and not packed.trimmed:
        return Choice(STUFF, f"auto: the {len(packed.sources)} sources fit the prompt whole")
    model = model if model in AUTO_WHEN_TOO_LONG else None
    name = AUTO_WHEN_TOO_LONG[model]
    total = len(packed.sources) + packed.left_out
    what = name if name != STUFF else f"stuff with the {len(packed.sources)} that fit ({len(packed.trimmed)} trimmed)"
    return Choice(name, f"auto: {total} sources do not fit whole (budget {packed.budget} tokens); "
                        f"{what}, because {AUTO_WHY[model]}")


@dataclass(frozen=True)
class StrategyConfig:
    max_tokens: int
    temperature: float
    group_sources: int = 3  # sources per map / refine group
    parallel: int = 4  # concurrent map calls
    # (partial answer, its group's sources) -> whether any claim of it is supported; partial answers
    # no source supports are dropped before the reduce step (None: keep every one)
    grounded: Callable[[str, Sequence[Source]], bool] | None = None
    layout: Layout = Layout()  # of the one-call answer prompt (rag.generation.build_messages)
    # (candidate answer, its source) -> how well the source backs it (rag.checking.AnswerChecker.support):
    # map_rerank ranks by it and never chooses an unsupported candidate (None: not measured)
    support: Callable[[str, Sequence[Source]], Support] | None = None
    model: str | None = None  # the embedded model's key (RAG_LLM_EMBEDDED), None for another: what auto picks


@dataclass
class FinalStep:
    """What the pipeline does last: call the LLM with `messages` (streamed when streaming), or use
    `text` as the answer. `packed` holds every source the final answer may cite. `generation`:
    the intermediate call `text` comes from (its TTFT/TPOT), None for a refusal no call wrote.
    `fallback_text`: the answer to give instead when the last call's answer fails the checks
    (map_reduce's verified partial answers, markers in the global numbering)."""

    packed: PackedContext
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    generation: Generation | None = None
    fallback_text: str | None = None


def number_sources(hits: Sequence[Hit], budget: int, lang: str) -> list[Source]:
    """Every hit as a numbered source that fits the budget alone (cut at a sentence end if needed)."""
    out: list[Source] = []
    for hit in hits:
        packed = pack_context([hit], budget=budget, max_sources=1, lang=lang)
        if packed.sources:
            out.append(replace(packed.sources[0], number=len(out) + 1))
    return out


def _cost(source: Source, lang: str) -> int:
    return estimate_tokens(source_block(source.number, _as_chunk(source), source.text, lang)) + 2


def group_sources(sources: Sequence[Source], budget: int, max_per_group: int, lang: str) -> list[list[Source]]:
    """Consecutive sources in groups of at most `max_per_group` whose blocks fit `budget`."""
    groups: list[list[Source]] = []
    used = 0
    for source in sources:
        cost = _cost(source, lang)
        if not groups or len(groups[-1]) >= max_per_group or used + cost > budget:
            groups.append([])
            used = 0
        groups[-1].append(source)
        used += cost
    return groups


def keep_markers(text: str, allowed: set[int]) -> str:
    """The text without the `[n]` markers whose number is not in `allowed`."""
    return _MARKER.sub(lambda m: m.group(0) if int(m.group(1)) in allowed else "", text).strip()


def cite_single(text: str, group: Sequence[Source]) -> str:
    """A partial answer from a one-source group with no marker at all: every sentence is that
    source's, so each gets its `[n]` (small models often write none, and the reduce step needs them)."""
    if len(group) != 1 or _MARKER.search(text) or is_refusal(text):
        return text
    number = group[0].number
    spans = split_sentences(text)
    if not spans:
        return text
    out, pos = [], 0
    for _, end in spans:
        sentence = text[pos:end].rstrip()
        stop = sentence[-1] if sentence and sentence[-1] in ".!?。！？" else ""
        out.append(f"{sentence[:len(sentence) - len(stop)].rstrip()} [{number}]{stop}")
        pos = end
    return " ".join(part.strip() for part in out) + text[pos:]


def parse_score(reply: str) -> tuple[str, int]:
    """(the answer without its score line, the score 0..100; 0 when none is given)."""
    matches = list(_SCORE.finditer(reply))
    if not matches:
        return reply.strip(), 0
    last = matches[-1]
    text = (reply[: last.start()] + reply[last.end():]).strip()
    return text, max(0, min(100, int(last.group(1))))


def _blocks(sources: Sequence[Source], lang: str) -> str:
    return "\n\n".join(source_block(s.number, _as_chunk(s), s.text, lang) for s in sources)


class StrategyRunner:
    """`llm` is a function returning the model, called only when a step needs it (stuff needs none
    here: the pipeline makes its one call)."""

    def __init__(self, llm: Callable[[], LLM], config: StrategyConfig) -> None:
        self.llm = llm
        self.config = config
        self.calls = 0

    def final_step(self, strategy: str, question: str, hits: Sequence[Hit], packed: PackedContext,
                   lang: str) -> FinalStep:
        """Run the intermediate calls of `strategy` (already resolved, not auto) and return the final step."""
        if strategy == STUFF:
            return FinalStep(packed, self._answer_messages(question, packed.sources, lang), info={"name": STUFF})
        sources = number_sources(hits, packed.budget, lang)
        whole = PackedContext(sources, packed.budget, used=sum(_cost(s, lang) for s in sources),
                              left_out=len(hits) - len(sources))
        if strategy == MAP_RERANK:
            return self._map_rerank(question, whole, lang)
        groups = group_sources(sources, packed.budget, self.config.group_sources, lang)
        info: dict[str, Any] = {"name": strategy, "groups": [[s.number for s in g] for g in groups]}
        if len(groups) <= 1:  # everything fits one prompt: the strategy is the plain answer call
            return FinalStep(whole, self._answer_messages(question, sources, lang), info=info)
        if strategy == MAP_REDUCE:
            return self._map_reduce(question, whole, groups, lang, info)
        if strategy == REFINE:
            return self._refine(question, whole, groups, lang, info)
        raise InvalidRequest(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}", field="strategy")

    # -- steps ---------------------------------------------------------------------------------
    def _chat(self, messages: list[dict[str, str]]) -> str:
        return self._generate(messages).text

    def _generate(self, messages: list[dict[str, str]]) -> Generation:
        """One intermediate call, timed (its text may become the answer)."""
        self.calls += 1
        return generate_timed(self.llm(), messages, max_tokens=self.config.max_tokens,
                              temperature=self.config.temperature)

    def _parallel(self, batches: list[list[dict[str, str]]]) -> list[Generation]:
        if len(batches) <= 1 or self.config.parallel <= 1:
            return [self._generate(m) for m in batches]
        with ThreadPoolExecutor(max_workers=min(self.config.parallel, len(batches))) as pool:
            return list(pool.map(self._generate, batches))

    def _map_reduce(self, question: str, whole: PackedContext, groups: list[list[Source]], lang: str,
                    info: dict[str, Any]) -> FinalStep:
        template = strategy_prompts.MAP
        replies = self._parallel([prompts.messages(template, lang, sources=_blocks(g, lang), question=question)
                                  for g in groups])
        partials = [(cite_single(keep_markers(r.text, {s.number for s in g}), g), g, r)
                    for r, g in zip(replies, groups, strict=True)]
        answered = [(p, g, r) for p, g, r in partials if not is_refusal(p)]
        grounded = self.config.grounded
        kept_calls = [(p, r) for p, g, r in answered if grounded is None or grounded(p, g)]
        kept = [p for p, _ in kept_calls]
        info["partials"] = len(kept)
        if len(kept) < len(answered):
            info["unsupported_partials"] = len(answered) - len(kept)
        info["map_calls"] = len(groups)
        if not kept:
            return FinalStep(whole, text=prompts.refusal(lang), info=info)
        if len(kept) == 1:  # one group answered: nothing to combine (and no reduce call to get wrong)
            return FinalStep(whole, text=kept[0], info={**info, "collapse_rounds": 0}, generation=kept_calls[0][1])
        verified = list(kept)  # the reduce call's answer may fail the checks: these stand instead
        rounds = 0
        numbers = {s.number for s in whole.sources}
        while len(kept) > 1 and estimate_tokens(self._partials(kept, lang)) > whole.budget:
            batches = self._batches(kept, whole.budget, lang)
            if len(batches) >= len(kept) or rounds >= MAX_COLLAPSE_ROUNDS:
                break  # no batch of two fits: combining more cannot shrink them
            collapsed = self._parallel([self._reduce_messages(question, batch, lang) for batch in batches])
            kept = [keep_markers(p.text, numbers) for p in collapsed if not is_refusal(p.text)]
            rounds += 1
            if not kept:
                return FinalStep(whole, text=prompts.refusal(lang), info={**info, "collapse_rounds": rounds},
                                 fallback_text="\n\n".join(p.strip() for p in verified))
        info["collapse_rounds"] = rounds
        fitting = self._fit(kept, whole.budget, lang)
        if len(fitting) < len(kept):
            info["partials_left_out"] = len(kept) - len(fitting)
        return FinalStep(whole, self._reduce_messages(question, fitting, lang), info=info,
                         fallback_text="\n\n".join(p.strip() for p in verified))

    def _fit(self, partials: list[str], budget: int, lang: str) -> list[str]:
        """The leading partial answers (best-ranked sources first) whose list fits the budget; at least one."""
        out = partials[:1]
        for p in partials[1:]:
            if estimate_tokens(self._partials([*out, p], lang)) > budget:
                break
            out.append(p)
        return out

    @staticmethod
    def _partials(partials: Sequence[str], lang: str) -> str:
        label = strategy_prompts.PART_LABEL.get(lang, strategy_prompts.PART_LABEL["en"])
        return "\n\n".join(f"{label.format(n=i)}\n{p.strip()}" for i, p in enumerate(partials, 1))

    def _reduce_messages(self, question: str, partials: Sequence[str], lang: str) -> list[dict[str, str]]:
        return prompts.messages(strategy_prompts.REDUCE, lang, question=question,
                                partials=self._partials(partials, lang))

    def _batches(self, partials: list[str], budget: int, lang: str) -> list[list[str]]:
        batches: list[list[str]] = [[]]
        for p in partials:
            if batches[-1] and estimate_tokens(self._partials([*batches[-1], p], lang)) > budget:
                batches.append([])
            batches[-1].append(p)
        return batches

    def _answer_messages(self, question: str, sources: Sequence[Source], lang: str) -> list[dict[str, str]]:
        """The one-call answer prompt, as configured."""
        return build_messages(question, sources, lang, self.config.layout)

    def _refine(self, question: str, whole: PackedContext, groups: list[list[Source]], lang: str,
                info: dict[str, Any]) -> FinalStep:
        seen = {s.number for s in groups[0]}
        answer = keep_markers(self._chat(build_messages(question, groups[0], lang)), seen)
        for group in groups[1:-1]:
            seen |= {s.number for s in group}
            answer = keep_markers(self._chat(self._refine_messages(question, answer, group, lang)), seen)
        info["refine_steps"] = len(groups) - 1
        return FinalStep(whole, self._refine_messages(question, answer, groups[-1], lang), info=info)

    @staticmethod
    def _refine_messages(question: str, answer: str, group: Sequence[Source], lang: str) -> list[dict[str, str]]:
        if is_refusal(answer):  # nothing to improve yet: answer from this group alone
            return build_messages(question, group, lang)
        return prompts.messages(strategy_prompts.REFINE, lang, question=question, answer=answer,
                                sources=_blocks(group, lang))

    def _map_rerank(self, question: str, whole: PackedContext, lang: str) -> FinalStep:
        sources = whole.sources
        replies = self._parallel([prompts.messages(strategy_prompts.RERANK_ANSWER, lang,
                                                   sources=_blocks([s], lang), question=question) for s in sources])
        candidates = [self._candidate(question, source, reply, sources)
                      for source, reply in zip(sources, replies, strict=True)]
        info: dict[str, Any] = {"name": MAP_RERANK, "map_calls": len(sources),
                                "candidates": [c.info() for c in candidates]}
        eligible = [c for c in candidates if c.rank is not None]
        # the measured rank first; the self-score only breaks ties; then the better-ranked source (first)
        best = max(eligible, key=lambda c: (c.rank, c.self_score, -c.source), default=None)
        if best is None:
            return FinalStep(whole, text=prompts.refusal(lang), info={**info, "chosen": None})
        info["chosen"] = best.source
        return FinalStep(whole, text=best.text, info=info, generation=best.generation)

    def _candidate(self, question: str, source: Source, reply: Generation, sources: Sequence[Source]) -> Candidate:
        """One source's answer, measured: its support by the source and its coverage of the question."""
        text, score = parse_score(reply.text)
        # one source was shown: every marker means that source, whatever number the model wrote
        text = _MARKER.sub(f" [{source.number}]", text).strip()
        if is_refusal(text) or not re.search(r"\w{2}", _MARKER.sub("", text)):  # refused, or no words
            return Candidate(source.number, text, reply, score, excluded="refused")
        if not _MARKER.search(text):
            text = f"{text} [{source.number}]"
        support = self.config.support(text, [source]) if self.config.support is not None else None
        coverage = candidate_coverage(question, text, source, sources)
        if support is not None and support.supported == 0:
            return Candidate(source.number, text, reply, score, support, coverage, excluded="unsupported")
        parts = [x for x in (None if support is None else support.score, coverage) if x is not None]
        rank = round(sum(parts) / len(parts), 2) if parts else 0.0
        return Candidate(source.number, text, reply, score, support, coverage, rank)


@dataclass(frozen=True)
class Candidate:
    """A map_rerank candidate: source `source`'s answer `text`, the model's `reply` and its
    self-score, the verifier's `support` of it by its source, its `coverage` of the question
    (`candidate_coverage`), and its `rank` (the mean of those two, rounded: near-equal ranks tie),
    None when it may not be chosen (`excluded`: refused, unsupported)."""

    source: int
    text: str
    generation: Generation
    self_score: int
    support: Support | None = None
    coverage: float | None = None
    rank: float | None = None
    excluded: str | None = None

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "reply": self.generation.text[:RERANK_REPLY_CHARS],
                               "self_score": self.self_score}
        if self.support is not None:
            out["support"] = self.support.score
            out["supported_claims"] = f"{self.support.supported}/{self.support.claims}"
        if self.coverage is not None:
            out["coverage"] = round(self.coverage, 3)
        out["rank_score"] = self.rank
        if self.excluded:
            out["excluded"] = self.excluded
        return out
