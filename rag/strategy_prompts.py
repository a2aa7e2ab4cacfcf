"""Prompt templates of the combine strategies (`rag.strategies`), English and Chinese, as
(system, user) pairs formatted with named fields, like `rag.prompts`. Sources keep their original
numbers in every step, so a `[n]` written in a map, refine or rerank step still names the source
the reader sees."""

from __future__ import annotations

from rag.prompts import REFUSAL

MAP = {
    "en": (
        "You extract what numbered sources say about a question. Write the relevant facts as short full "
        "sentences, each ending with the number of its source in square brackets, for example: The battery "
        "lasts two hours [2]. Keep the source numbers exactly as given. Use only the sources, never outside "
        "knowledge. If no source is relevant to the question, reply exactly: " + REFUSAL["en"],
        "Sources:\n\n{sources}\n\nQuestion: {question}\n\nRelevant facts:",
    ),
    "zh": (
        "你从编号资料中提取与问题有关的内容。用简短完整的中文句子写出相关事实，每句末尾的方括号里写上资料编号，"
        "例如：电池可以使用两小时 [2]。资料编号必须与所给的一致。只使用资料中的内容，不要添加资料以外的知识。"
        "如果没有任何资料与问题有关，只回答：" + REFUSAL["zh"],
        "资料：\n\n{sources}\n\n问题：{question}\n\n相关事实：",
    ),
}

REDUCE = {
    "en": (
        "You combine partial answers into one final answer to the question. The partial answers were written "
        "from numbered sources and cite them as [n]. Use only the facts in the partial answers, remove "
        "repetitions, and keep every [n] marker unchanged at the end of the sentence it belongs to. Answer in "
        "English, in full sentences, briefly and directly. If the partial answers do not answer the question, "
        "reply exactly: " + REFUSAL["en"],
        "Question: {question}\n\nPartial answers:\n\n{partials}\n\nFinal answer:",
    ),
    "zh": (
        "你把几份部分回答合并成对问题的一个最终回答。部分回答根据编号资料写成，用 [n] 标注出处。只使用部分回答中的"
        "事实，去掉重复内容，并把每个 [n] 标记原样保留在它所属句子的末尾。用完整的中文句子简洁直接地回答。"
        "如果部分回答不能回答这个问题，只回答：" + REFUSAL["zh"],
        "问题：{question}\n\n部分回答：\n\n{partials}\n\n最终回答：",
    ),
}

REFINE = {
    "en": (
        "You improve an existing answer to a question with new numbered sources. Keep what the existing answer "
        "says, with its [n] markers, unless a new source corrects it; add the relevant facts of the new "
        "sources, each sentence ending with the number of its source in square brackets. Use only the existing "
        "answer and the sources. Reply with the improved answer only, in English.",
        "Question: {question}\n\nExisting answer:\n{answer}\n\nNew sources:\n\n{sources}\n\nImproved answer:",
    ),
    "zh": (
        "你用新的编号资料改进对问题的现有回答。保留现有回答的内容及其 [n] 标记，除非新资料更正了它；加入新资料中"
        "相关的事实，每句末尾的方括号里写上资料编号。只使用现有回答和资料中的内容。只输出改进后的中文回答。",
        "问题：{question}\n\n现有回答：\n{answer}\n\n新资料：\n\n{sources}\n\n改进后的回答：",
    ),
}

RERANK_ANSWER = {
    "en": (
        "You answer a question from one numbered source and rate how well that source answers it. Write the "
        "answer in full sentences, each ending with the source number in square brackets. On the last line "
        "write 'Score: ' and a number from 0 (the source does not answer the question) to 100 (it answers it "
        "fully). If the source does not contain the answer, reply: " + REFUSAL["en"] + " Score: 0",
        "Source:\n\n{sources}\n\nQuestion: {question}\n\nAnswer, then Score:",
    ),
    "zh": (
        "你根据一份编号资料回答问题，并评价这份资料回答问题的程度。用完整的中文句子回答，每句末尾的方括号里写上资料"
        "编号。最后一行写“分数：”和一个 0（资料不能回答问题）到 100（资料完整回答了问题）之间的数字。如果资料中"
        "没有答案，回答：" + REFUSAL["zh"] + " 分数：0",
        "资料：\n\n{sources}\n\n问题：{question}\n\n回答，然后写分数：",
    ),
}

PART_LABEL = {"en": "Part {n}:", "zh": "第 {n} 部分："}

STRATEGY_PROMPTS = {"map": MAP, "reduce": REDUCE, "refine": REFINE, "map_rerank": RERANK_ANSWER}
