"""Multi-turn evaluation (`rag eval DATASET --multiturn`): conversations built from a dataset's own
questions, and how well a follow-up, asked with its history through the pipeline's condensing, is
retrieved (and answered) against the same question asked in full.

How a conversation is made (any BEIR folder the same way; docs/eval.md "Multi-turn"):
1. The evaluable questions of the split are grouped by their first relevant passage (highest
   grade, then smallest id). In an order drawn with the seed, each group gives conversations of
   up to `turns` questions; a group of one gives none.
2. The first question is asked in full. The assistant's reply in the history is its gold answer
   (the first alternative, or the `all_of` parts joined): an assistant that answered right.
3. Each later question becomes a follow-up by taking out its subject: the longest span it shares
   with the passage's title or an earlier question of the conversation (English: whole words, one
   of them not a stop word; Chinese: two or more CJK characters, not only function characters; a
   《title》 keeps its brackets). By a hash of the question id the span is replaced by a pronoun
   ("it" / "它") or dropped (with an article or a "的" that would dangle). A question sharing no
   such span, or left without a content word of its own, is not used (counted by reason).
4. A question not used in such a conversation (its passage has no other question, as in most of
   RGB) gets a two-turn one when it names an entity (Chinese: the first jieba word tagged as a
   person, place, organisation, other proper noun or Latin-script name; English: the longest run
   of capitalised, all-capitals or letter-and-digit words after the first word): the first turn
   asks about the entity ("介绍一下S。" / "Tell me about S."; no reply in the history, nothing
   retrieved for it is scored), the second is the question with the entity taken out as in 3.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.ablations import EVAL_DEPTH, ChunkLocator
from eval.datasets import Dataset
from eval.metrics import answer_accuracy, dedupe_docs, paired_bootstrap, retrieval_metrics
from eval.report import markdown_table, write_jsonl
from eval.runner import eval_kb_name, open_dataset, prepare_kb
from rag.citations import strip_markers
from rag.errors import ConfigError
from rag.factory import Services
from rag.text import EN_STOPWORDS, has_cjk, jieba_ready, tokenize

IN_FULL, FOLLOW_UP = "in full", "follow-up"
TURNS = (2, 3)
_ZH_FUNCTION = set("的是了在和与及或由被把为对于从以其这那之个有哪谁什么怎样如何多少几吗呢吧啊也都就而所")
_EN_WORD = re.compile(r"[A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)*")
_LEADING = re.compile(r"^[\s,，、:：;；]+")
_ZH_ENTITY_FLAGS = ("nr", "ns", "nt", "nz", "eng", "j")
_EN_NAME = re.compile(r"^(?:[A-Z][A-Za-z0-9'-]*|[A-Za-z]*\d[A-Za-z0-9-]*|[a-z]+[A-Z][A-Za-z0-9-]*)$")
ABOUT = {"zh": "介绍一下{subject}。", "en": "Tell me about {subject}."}


@dataclass(frozen=True)
class Turn:
    qid: str
    full: str  # the dataset's question
    asked: str  # as the conversation asks it
    style: str  # "first", "pronoun" or "dropped"
    subject: str = ""  # the span taken out


@dataclass
class Conversation:
    id: str
    doc_id: str
    turns: list[Turn]
    replies: list[str]  # the assistant's reply after each turn (its gold answer; "" for none)

    def history(self, upto: int) -> list[dict[str, str]]:
        """The messages before turn `upto`."""
        out: list[dict[str, str]] = []
        for turn, reply in zip(self.turns[:upto], self.replies[:upto], strict=True):
            out.append({"role": "user", "content": turn.asked})
            if reply:
                out.append({"role": "assistant", "content": reply})
        return out


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _longest_shared_zh(question: str, anchor: str) -> str:
    """The longest substring of `question` found in `anchor` that counts as a subject."""
    best = ""
    for i in range(len(question)):
        for j in range(len(question), i + max(len(best), 1), -1):
            span = question[i:j].strip(" 　？?，,。").strip("".join(_ZH_FUNCTION))
            if len(span) > len(best) and span in anchor and _zh_subject(span):
                best = span
                break
    return best


def _zh_subject(span: str) -> bool:
    cjk = [c for c in span if "\u3400" <= c <= "\u9fff"]
    return (len(cjk) >= 2 or len(re.sub(r"\W", "", span)) >= 3) and any(c not in _ZH_FUNCTION for c in cjk or span)


def _longest_shared_en(question: str, anchor: str) -> str:
    words = [(m.group(), m.start(), m.end()) for m in _EN_WORD.finditer(question)]
    anchor_words = " " + " ".join(w.lower() for w in _EN_WORD.findall(anchor)) + " "
    best = ""
    for i in range(len(words)):
        for j in range(len(words), i, -1):
            part = words[i:j]
            while part and part[0][0].lower() in EN_STOPWORDS:
                part = part[1:]
            while part and part[-1][0].lower() in EN_STOPWORDS:
                part = part[:-1]
            if not part:
                continue
            key = " " + " ".join(w.lower() for w, _, _ in part) + " "
            span = question[part[0][1]:part[-1][2]]
            if len(span) > len(best) and key in anchor_words:
                best = span
                break
    return best


def entity_of(question: str) -> str:
    """The entity a question names (module text, point 4), or ""."""
    if has_cjk(question):
        import jieba.posseg

        jieba_ready()  # the dictionary, loaded once (quietly)
        return next((w for w, flag in jieba.posseg.cut(question)
                     if flag.startswith(_ZH_ENTITY_FLAGS) and len(w) >= 2), "")
    words = list(_EN_WORD.finditer(question))
    best, run = "", []
    for m in words[1:]:
        if _EN_NAME.match(m.group()) and m.group().lower() not in EN_STOPWORDS:
            run.append(m)
            span = question[run[0].start():run[-1].end()]
            best = span if len(span) > len(best) else best
        else:
            run = []
    return best


def follow_up(question: str, anchors: Sequence[str], style: str, subject: str = "") -> tuple[str, str] | None:
    """(the question with its subject taken out, the subject), or None when it shares no subject
    with `anchors` (unless `subject` is given) or keeps no content word of its own without it.
    `style`: "pronoun" | "dropped"."""
    zh = has_cjk(question)
    subject = subject or max(((_longest_shared_zh if zh else _longest_shared_en)(question, a)
                              for a in anchors if a), key=len, default="")
    if not subject or subject not in question:
        return None
    start = question.find(subject)
    end = start + len(subject)
    if zh:
        if question[start - 1:start] == "《" and question[end:end + 1] == "》":
            start, end = start - 1, end + 1
        if style == "dropped" and question[end:end + 1] == "的":
            end += 1
        asked = question[:start] + ("它" if style == "pronoun" else "") + question[end:]
    else:
        before = question[:start]
        article = re.search(r"(?i)\b(the|a|an)\s+$", before)
        if article:
            before = before[:article.start()]
        after = question[end:]
        if style == "pronoun":
            possessive = re.match(r"'s\b", after)
            word = "its" if possessive else "it"
            after = after[possessive.end():] if possessive else after
            asked = before + word + after
        else:
            if re.match(r"'s\b", after):
                after = after[2:]
            asked = re.sub(r"(?i)\b(of|in|for|on|about|with)\s+$", "", before) + after
        asked = re.sub(r"\s+([?.,!;:])", r"\1", re.sub(r"\s{2,}", " ", asked)).strip()
        asked = asked[:1].upper() + asked[1:]
    asked = _LEADING.sub("", asked).strip()
    if not set(tokenize(asked)) - set(tokenize("它 it its")) or asked == question:
        return None
    return asked, subject


def _reply(dataset: Dataset, qid: str) -> str:
    key = dataset.answer_keys.get(qid)
    if key is None:
        return ""
    if key.answers:
        return key.answers[0]
    return ", ".join(part[0] for part in key.all_of if part)


def _first_doc(relevant: dict[str, int | float]) -> str:
    return min(relevant, key=lambda d: (-float(relevant[d]), d))


def build_conversations(dataset: Dataset, qids: Sequence[str], seed: int = 0,
                        turns: int = 3) -> tuple[list[Conversation], Counter]:
    """Conversations of up to `turns` questions from `qids` (see the module's text), and the
    questions not used as a follow-up, counted by reason."""
    if turns not in TURNS:
        raise ConfigError(f"turns must be one of {TURNS}, got {turns}", field="turns")
    groups: dict[str, list[str]] = defaultdict(list)
    for qid in qids:
        groups[_first_doc(dataset.qrels[qid])].append(qid)
    skipped: Counter = Counter()
    conversations = []
    for doc_id in sorted(groups):
        ordered = sorted(groups[doc_id], key=lambda q: _hash(f"{seed}:{q}"))
        if len(ordered) < 2:
            continue
        doc = dataset.corpus.get(doc_id)
        title = doc.title if doc is not None else ""
        pending: list[Turn] = []
        for qid in ordered:
            question = dataset.queries[qid]
            if not pending:
                pending = [Turn(qid, question, question, "first")]
                continue
            style = "pronoun" if _hash(f"style:{seed}:{qid}") % 2 == 0 else "dropped"
            made = follow_up(question, [title, *(t.full for t in pending)], style)
            if made is None:
                skipped["no subject shared with the title or an earlier question"] += 1
                continue
            pending.append(Turn(qid, question, made[0], style, made[1]))
            if len(pending) == turns:
                conversations.append(Conversation(f"{doc_id}:{len(conversations)}", doc_id, pending,
                                                  [_reply(dataset, t.qid) for t in pending]))
                pending = []
        if len(pending) >= 2:
            conversations.append(Conversation(f"{doc_id}:{len(conversations)}", doc_id, pending,
                                              [_reply(dataset, t.qid) for t in pending]))
    used = {t.qid for c in conversations for t in c.turns}
    for qid in sorted((q for q in qids if q not in used), key=lambda q: _hash(f"{seed}:{q}")):
        question = dataset.queries[qid]
        entity = entity_of(question)
        style = "pronoun" if _hash(f"style:{seed}:{qid}") % 2 == 0 else "dropped"
        made = follow_up(question, (), style, entity) if entity else None
        if made is None:
            skipped["no entity to ask about first"] += 1
            continue
        about = ABOUT["zh" if has_cjk(question) else "en"].format(subject=entity)
        conversations.append(Conversation(f"{qid}:about", _first_doc(dataset.qrels[qid]),
                                          [Turn(f"{qid}:about", about, about, "about"),
                                           Turn(qid, question, made[0], style, entity)],
                                          ["", _reply(dataset, qid)]))
    return conversations, skipped


# -- running ---------------------------------------------------------------------------------

@dataclass
class MultiturnSpec:
    dataset: str
    limit: int | None = None  # conversations, drawn with the seed
    seed: int = 0
    split: str = "all"
    turns: int = 3
    answers: bool = False
    kb_prefix: str = "eval"
    out_dir: Path | None = None
    qrels_split: str | None = None


@dataclass
class MultiturnResult:
    conversations: list[Conversation]
    skipped: Counter
    rows: list[dict[str, Any]]
    tables: dict[str, str] = field(default_factory=dict)
    out_dir: Path | None = None


def _ranks(hits, relevant: dict[str, int | float], locator: ChunkLocator, gold) -> dict[str, Any]:
    docs = dedupe_docs(locator.doc_id(h.chunk.source) for h in hits[:EVAL_DEPTH])
    doc = retrieval_metrics([[float(relevant.get(d, 0)) for d in docs]], [len(relevant)])["per_query"][0]
    row = {"hit@1": doc["hit@1"], "hit@5": doc["hit@5"], "mrr@10": doc["mrr@10"]}
    if gold:
        flags = [locator.contains(h.chunk, gold) for h in hits[:EVAL_DEPTH]]
        row["answer_mrr@10"] = retrieval_metrics([flags], [1])["per_query"][0]["mrr@10"]
    return row


def run_multiturn(services: Services, spec: MultiturnSpec, *,
                  progress: Callable[[int], None] | None = None) -> MultiturnResult:
    """Build the conversations, ingest the corpus into its evaluation knowledge base (shared with
    `rag eval`), and retrieve (and with `answers`, answer) every follow-up twice: as the question in
    full and as asked with its history; write conversations.jsonl, turns.jsonl and report.md into
    `spec.out_dir`."""
    dataset, written = open_dataset(services, spec.dataset, qrels_split=spec.qrels_split, keep_text="all")
    if spec.answers and not dataset.answer_keys:
        raise ConfigError(f"dataset {dataset.name} has no answers.jsonl: --answers cannot be scored", field="answers")
    conversations, skipped = build_conversations(dataset, dataset.sample(None, spec.seed, spec.split), spec.seed,
                                                 spec.turns)
    if spec.limit is not None and spec.limit < len(conversations):
        conversations = random.Random(spec.seed).sample(conversations, spec.limit)
    if not conversations:
        raise ConfigError(f"no conversation can be built from {dataset.name} ({spec.split} half): "
                          f"{dict(skipped) or 'no passage has two evaluable questions'}", field="dataset")
    kb = eval_kb_name(spec.kb_prefix, dataset.name, services.settings)
    prepare_kb(services, dataset, kb, written=written)
    pipeline = services.pipeline
    locator = ChunkLocator(dataset)
    rows = []
    for conversation in conversations:
        for index, turn in enumerate(conversation.turns[1:], start=1):
            history = conversation.history(index)
            relevant, gold = dataset.qrels[turn.qid], dataset.answers.get(turn.qid)
            row: dict[str, Any] = {"conversation": conversation.id, "qid": turn.qid, "full": turn.full,
                                   "asked": turn.asked, "style": turn.style, "subject": turn.subject, "runs": {}}
            for asked in (IN_FULL, FOLLOW_UP):
                question, kwargs = (turn.full, {}) if asked == IN_FULL else (turn.asked, {"history": history})
                started = time.perf_counter()
                result = pipeline.retrieve(question, kb, limit=EVAL_DEPTH, **kwargs)
                run = {"standalone": result.standalone_question, "query": result.variants[0]["text"],
                       "seconds": time.perf_counter() - started,
                       **_ranks(list(result.hits), relevant, locator, gold)}
                condense = result.trace.transforms.get("condense") or {}
                if condense.get("reason"):
                    run["rejected"] = condense["reason"]
                if spec.answers:
                    run.update(_answer(pipeline, kb, dataset, turn.qid, question, kwargs))
                row["runs"][asked] = run
            rows.append(row)
            if progress is not None:
                progress(1)
    result = MultiturnResult(conversations, skipped, rows)
    result.tables = tables(rows, spec.answers)
    out_dir = Path(spec.out_dir) if spec.out_dir else Path("runs") / (
        f"multiturn-{dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    _write(result, spec, dataset, out_dir)
    return result


def _answer(pipeline, kb: str, dataset: Dataset, qid: str, question: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    key = dataset.answer_keys.get(qid)
    started = time.perf_counter()
    answer = pipeline.answer(question, kb, **kwargs)
    prediction = "" if answer.refused else strip_markers(answer.answer)
    return {"answer": answer.answer, "refused": answer.refused, "answer_seconds": time.perf_counter() - started,
            "accuracy": answer_accuracy(prediction, list(key.answers), key.all_of) if key else None}


def tables(rows: Sequence[dict[str, Any]], answers: bool) -> dict[str, str]:
    """The retrieval table (and the answer table), the follow-up against the question in full:
    mean, paired bootstrap 95% interval of the difference, wins/ties/losses."""
    out = {}
    metrics = [m for m in ("hit@1", "hit@5", "mrr@10", "answer_mrr@10")
               if rows and all(m in r["runs"][IN_FULL] for r in rows)]
    out["Retrieval of the follow-up"] = _table(rows, metrics, "mrr@10")
    if answers:
        scored = [r for r in rows if r["runs"][IN_FULL].get("accuracy") is not None]
        out["Answers to the follow-up"] = _table(scored, ["accuracy", "refused"], "accuracy")
    return out


def _table(rows: Sequence[dict[str, Any]], metrics: Sequence[str], compared: str) -> str:
    table = []
    for asked in (IN_FULL, FOLLOW_UP):
        values = {m: [float(r["runs"][asked][m]) for r in rows] for m in metrics}
        line: dict[str, Any] = {"question as": asked, "n": len(rows)}
        line.update({m: sum(v) / len(v) if v else None for m, v in values.items()})
        if asked != IN_FULL and rows:
            b = paired_bootstrap([float(r["runs"][IN_FULL][compared]) for r in rows], values[compared])
            line[f"{compared} − in full [95% CI]"] = f"{b['mean']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}]"
            line["wins/ties/losses"] = f"{b['wins']}/{b['ties']}/{b['losses']}"
        rejected = sum(1 for r in rows if r["runs"][asked].get("rejected"))
        if rejected:
            line["rewrites rejected"] = rejected
        table.append(line)
    return markdown_table(table)


def _write(result: MultiturnResult, spec: MultiturnSpec, dataset: Dataset, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "conversations.jsonl", (asdict(c) for c in result.conversations))
    write_jsonl(out_dir / "turns.jsonl", result.rows)
    styles = Counter(t.style for c in result.conversations for t in c.turns[1:])
    lines = [f"# Multi-turn: {dataset.name} ({spec.split} half, seed {spec.seed})", "",
             f"{len(result.conversations)} conversations, {len(result.rows)} follow-ups "
             f"({', '.join(f'{n} {s}' for s, n in sorted(styles.items()))}); questions not used: "
             f"{dict(result.skipped) or 'none'}. Retrieval at document level; answer_mrr@10 ranks the first "
             "chunk holding the gold answer.", ""]
    for heading, table in result.tables.items():
        lines += [f"## {heading}", "", table, ""]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
    result.out_dir = out_dir
