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
# the model sees them. The example keeps its own order whatever the layout: listing the plain
# example's sources best last (its [2], which the answer cites, first) cost 0.033 accuracy on 150
# CMRC 2018 dev questions (1 win / 6 losses), so the example's answer comes from the source listed
# last, where the layout puts source [1].
# "plain": the answer draws on the one source that concerns the question's subject.
# "distractor": the question names a year; [1] (listed last) states that year's fact and [2] the
# same fact of another year; the answer names what is asked, restates the year and cites [1] only
# (CMRC 2018 dev: -0.020 [-0.073, +0.027] against plain listed best last; not the default).
ANSWER_EXAMPLES = {
    "plain": {
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
    },
    "distractor": {
        "en": (
            "[2] Club newsletter · 2021 awards\nTom Chen won the 2021 Volunteer of the Year award for organising "
            "the food bank.\n\n[1] Club newsletter · 2022 awards\nThe 2022 Volunteer of the Year award went to "
            "Maria Lopez, who ran the youth programme. The awards dinner was held in the town hall.",
            "Who won the Volunteer of the Year award in 2022?",
            "Maria Lopez won the 2022 Volunteer of the Year award [1].",
        ),
        "zh": (
            "[2] 协会通讯 · 2021 年度奖项\n陈涛因组织食物银行获得 2021 年度志愿者奖。\n\n"
            "[1] 协会通讯 · 2022 年度奖项\n2022 年度志愿者奖由负责青少年项目的李梅获得。颁奖晚宴在市政厅举行。",
            "2022 年度志愿者奖的获得者是谁？",
            "2022 年度志愿者奖的获得者是李梅 [1]。",
        ),
    },
}

# The extraction-first variant (`answer_style`), for questions that ask for a name, date, number or
# place: the short answer first, then the source's own sentence that states it. Small models copy
# the wrong sentence less often when they must first name the thing asked for, and the copied
# sentence keeps the answer checkable against the source.
ANSWER_SYSTEM_EXTRACT = {
    "en": (
        "You answer questions using only the numbered sources. First write the short answer: the few words "
        "(name, date, number, place or phrase) that answer exactly what is asked, with the number of the source "
        "in square brackets. Then copy the one sentence of that source that states it, with its number. The "
        "source must be about exactly what the question asks (the same year, edition, person or thing). Never "
        "add outside knowledge. Answer in English. If no source states the answer, reply exactly: "
        + REFUSAL["en"]
    ),
    "zh": (
        "你只根据编号资料回答问题。先写出简短答案：恰好回答所问内容的几个词（人名、时间、数字、地点或短语），"
        "并在方括号里写上资料编号；然后原样抄写该资料中说明这一点的那一句话，也写上编号。资料必须与问题所问的完全一致"
        "（同一年份、同一届、同一人或同一事物）。不要添加资料以外的知识。用中文回答。如果资料中没有答案，只回答："
        + REFUSAL["zh"]
    ),
}

ANSWER_EXAMPLE_EXTRACT = {
    "en": (
        "[1] Office guide · Opening hours\nThe office is open from 8:00 to 18:00 on weekdays. It is closed on "
        "public holidays.\n\n[2] Office guide · 2023 edition\nIn 2023 the office opened at 9:00 on weekdays.",
        "When does the office open on weekdays?",
        "At 8:00 [1]. The office is open from 8:00 to 18:00 on weekdays [1].",
    ),
    "zh": (
        "[1] 办公室指南 · 开放时间\n办公室工作日 8:00 至 18:00 开放，法定节假日关闭。\n\n"
        "[2] 办公室指南 · 2023 年版\n2023 年办公室工作日 9:00 开门。",
        "办公室工作日几点开门？",
        "8:00 [1]。办公室工作日 8:00 至 18:00 开放 [1]。",
    ),
}

ANSWER_SYSTEMS = {"sentences": ANSWER_SYSTEM, "extract": ANSWER_SYSTEM_EXTRACT}


def answer_example(style: str, example: str, lang: str) -> tuple[str, str, str]:
    """The worked example of an answer style: the extract style has its own; the sentences style the
    one `example` names (ANSWER_EXAMPLES)."""
    examples = ANSWER_EXAMPLE_EXTRACT if style == "extract" else ANSWER_EXAMPLES[example]
    return examples.get(lang, examples["en"])


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
