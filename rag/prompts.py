"""Prompt templates, English and Chinese. The language follows the user's question
(`rag.text.detect_language`): a Chinese question gets Chinese instructions, which small models
follow far better than "answer in Chinese" written in English."""

from __future__ import annotations

REFUSAL = {
    "en": "I could not find this in the documents.",
    "zh": "文档中没有找到相关信息。",
}


def refusal(lang: str) -> str:
    return REFUSAL.get(lang, REFUSAL["en"])


# -- answering -------------------------------------------------------------------------------

# Small models (the bundled 0.5B) echo a bare "[1]" when the rules show one alone, and cite far
# more reliably after one worked example; the example is sent as a previous chat turn.
ANSWER_SYSTEM = {
    "en": (
        "You are a helpful assistant. Answer the user's question in full sentences, using only facts stated "
        "in the numbered sources. Never add outside knowledge. Put the number of the source at the end of "
        "each sentence in square brackets, for example: The battery lasts two hours [2]. Answer in English, "
        "briefly and directly. If the sources do not contain the answer, reply exactly: " + REFUSAL["en"]
    ),
    "zh": (
        "你是一个乐于助人的助手。只根据编号资料中写明的事实，用完整的中文句子回答用户的问题，不要添加资料以外的知识。"
        "在每句话末尾的方括号里写上资料编号，例如：电池可以使用两小时 [2]。回答简洁直接。"
        "如果资料中没有答案，只回答：" + REFUSAL["zh"]
    ),
}

# The worked example shown before the real question: (sources, question, answer), the sources as
# the model sees them. The answer draws on the one source that concerns the question's subject. The
# example keeps its own order whatever the layout: listing its sources best last (its [2], which the
# answer cites, first) cost 0.033 accuracy on 150 CMRC 2018 dev questions (1 win / 6 losses), so the
# example's answer comes from the source listed last, where the layout puts source [1].
ANSWER_EXAMPLE = {
    "en": (
        "[1] Office guide · Opening hours\nThe office is open from 8:00 to 18:00 on weekdays. It is closed on "
        "public holidays.\n\n[2] Office guide · Parking\nStaff can park in the underground garage. Visitors "
        "must register at the reception.",
        "Where can visitors park?",
        "Visitors must register at the reception; staff park in the underground garage [2].",
    ),
    "zh": (
        "[1] 办公室指南 · 开放时间\n办公室工作日 8:00 至 18:00 开放，法定节假日关闭。\n\n"
        "[2] 办公室指南 · 停车\n员工可以把车停在地下车库。访客必须在前台登记。",
        "访客在哪里停车？",
        "访客需要先在前台登记，员工可以停在地下车库 [2]。",
    ),
}


SOURCES_HEADER = {"en": "Sources:", "zh": "资料："}
QUESTION_LABEL = {"en": "Question:", "zh": "问题："}
PAGE_LABEL = {"en": "page {page}", "zh": "第 {page} 页"}


# -- query understanding ---------------------------------------------------------------------
# Every template is a (system, user) pair formatted with named fields. Replies are parsed
# leniently (numbering, bullets, quotes and "Question:"-style prefixes are stripped).

CONDENSE = {
    "en": (
        "You rewrite a follow-up question from a conversation into one standalone question. Replace pronouns "
        "such as it, they, this, that with what they refer to in the conversation. Keep names, numbers and "
        "key terms. Do not answer the question. Reply with the standalone question only.",
        "Conversation:\n{history}\n\nFollow-up question: {question}\n\nStandalone question:",
    ),
    "zh": (
        "你把对话中的追问改写成一个独立完整的问题。把“它”“这个”“那个”“他们”等代词替换成对话中指代的具体内容，"
        "保留名称、数字和关键词。不要回答问题。只输出改写后的问题。",
        "对话：\n{history}\n\n追问：{question}\n\n独立问题：",
    ),
}

REWRITE = {
    "en": (
        "You turn messy search input into one clear, complete question for searching documents. Fix typos, "
        "keep every name, number and key term. Do not answer it. Reply with the question only.",
        "Search input: {question}\n\nClear question:",
    ),
    "zh": (
        "你把零散的搜索词改写成一个清晰完整的问题，用于检索文档。改正错别字，保留所有名称、数字和关键词。"
        "不要回答。只输出改写后的问题。",
        "搜索输入：{question}\n\n清晰的问题：",
    ),
}

MULTI_QUERY = {
    "en": (
        "You write alternative search queries for a question, to find more relevant documents. Each query "
        "must ask for the same information in different words (synonyms, other phrasings). Write exactly {n} "
        "queries, one per line, without numbering or any other text.",
        "Question: {question}\n\n{n} alternative queries:",
    ),
    "zh": (
        "你为一个问题写出不同说法的检索查询，以便找到更多相关文档。每个查询询问相同的信息，但用不同的词语"
        "（同义词、其他说法）。恰好写 {n} 个查询，每行一个，不要编号，不要其他内容。",
        "问题：{question}\n\n{n} 个不同说法的查询：",
    ),
}

HYDE = {
    "en": (
        "You write a short passage (2 to 4 sentences) that answers the question, in the style of a "
        "documentation page or report. Write plausible content even if unsure. Reply with the passage only.",
        "Question: {question}\n\nPassage:",
    ),
    "zh": (
        "你写一段简短的文字（2 到 4 句）来回答问题，风格像说明文档或报告中的段落。即使不确定，也写出合理的内容。"
        "只输出这段文字。",
        "问题：{question}\n\n段落：",
    ),
}

STEP_BACK = {
    "en": (
        "You write a step-back question: a more general question about the concept, topic or rule behind "
        "the given question, whose answer gives useful background. Reply with that one question only.",
        "Question: {question}\n\nMore general question:",
    ),
    "zh": (
        "你写一个“退一步”的问题：针对所给问题背后的概念、主题或规则，提出一个更概括的问题，其答案能提供有用的背景。"
        "只输出这一个问题。",
        "问题：{question}\n\n更概括的问题：",
    ),
}

SUB_QUESTION = {
    "en": (
        "You break a complex question into simpler sub-questions that can each be answered from a single "
        "document passage. Write at most {n} sub-questions, one per line, without numbering. If the question "
        "is already simple, repeat it unchanged on one line.",
        "Question: {question}\n\nSub-questions:",
    ),
    "zh": (
        "你把一个复杂的问题拆分成几个简单的子问题，每个子问题都能由文档中的一段内容回答。最多写 {n} 个子问题，"
        "每行一个，不要编号。如果问题本身已经很简单，就原样输出这一个问题。",
        "问题：{question}\n\n子问题：",
    ),
}

TRANSFORM_PROMPTS = {"rewrite": REWRITE, "multi_query": MULTI_QUERY, "hyde": HYDE, "step_back": STEP_BACK,
                     "sub_question": SUB_QUESTION}

# prefixes a model may echo before its reply ("Standalone question: ...")
ECHO_PREFIXES = (
    "standalone question", "clear question", "question", "query", "rewritten question", "more general question",
    "step-back question", "passage", "sub-question", "sub-questions", "answer",
    "独立问题", "清晰的问题", "问题", "查询", "更概括的问题", "段落", "子问题", "改写后的问题",
)


def messages(template: dict[str, tuple[str, str]], lang: str, **fields: object) -> list[dict[str, str]]:
    """Chat messages for a (system, user) template in `lang` (falls back to English)."""
    system, user = template.get(lang, template["en"])
    return [{"role": "system", "content": system.format(**fields)},
            {"role": "user", "content": user.format(**fields)}]
