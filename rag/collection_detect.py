"""Which questions are about the collection itself (rag/collection.py answers them), by rules in
English and Chinese. Conservative: a rule matches the whole question and names documents, a file type,
a tag or a period of the catalog ("what was added this week"); a question that merely contains
"documents" or 最新 ("What documents do I need for a visa?", "最新的报销标准是什么？") is not one."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_NEWEST = 5  # documents listed for "the newest documents" when the question gives no number

_DOCS_EN = r"(?:documents?|docs?|files?|articles?|records?)"
_KB_EN = r"(?:knowledge ?base|collection|\bkb\b|index|corpus|library|database|system)"
_IN_KB_EN = rf"(?: (?:in|of|from) (?:the |this |your |my )?{_KB_EN})?"
_DOCS_ZH = r"(?:文章|文档|文件|资料|材料)"
_KB_ZH = r"(?:知识库|资料库|文档库|库里|库中|系统里|系统中)"
_IN_KB_ZH = rf"(?:{_KB_ZH}(?:里|中)?的?)?"
_CL_ZH = r"(?:篇|个|份|本)"
_NUM_EN = r"(?P<n>\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten|twenty)"
_NUM2_EN = _NUM_EN.replace("?P<n>", "?P<n2>")
_NUM_ZH = r"(?P<n>\d{1,3}|[一二两三四五六七八九十]{1,3})"
_LIST_EN = r"(?:please )?(?:(?:list|show|give|find|tell)(?: me)? )?(?:all )?(?:the |your |my )?"
_LISTV_EN = r"(?:please )?(?:list|show|give|find|tell)(?: me)? (?:all )?(?:the |your |my )?"  # the verb required
_NEW_EN = (r"(?P<order>newest|latest|most recent(?:ly (?:added|updated|modified|changed|uploaded))?|recent|oldest|"
           r"earliest)")
_NEW_ZH = r"(?P<order>最新|最近|最早|最旧|最老)(?P<verb>更新|修改|添加|新增|加入|上传|收录)?"
_VERB_EN = (r"(?P<verb>added|new|uploaded|ingested|indexed|imported|updated|modified|changed|edited|revised)")
_VERB_ZH = r"(?P<verb>新增|新加|添加|加入|上传|收录|导入|更新|修改|变更|改动|编辑)"
_PERIOD_EN = (r"(?P<period>today|yesterday|this (?:week|month|year)|last (?:week|month|year)|"
              rf"(?:(?:in|during|over|within) )?(?:the )?(?:last|past) (?:{_NUM_EN} )?(?:day|week|month)s?)")
_PERIOD_ZH = (r"(?P<period>今天|今日|昨天|本周|这周|这一?个?星期|本星期|上周|上个?星期|本月|这个月|上个?月|今年|"
              rf"(?:最近|近|过去)的?{_NUM_ZH}?个?(?:天|日|周|星期|礼拜|月))")
_IMAGES = ("png", "jpeg", "tiff", "bmp", "webp")
_TYPES = {  # a word naming a file type -> its label and the catalog formats it covers
    "pdf": ("PDF", ("pdf",)), "word": ("Word", ("docx",)), "docx": ("Word", ("docx",)),
    "excel": ("Excel", ("xlsx",)), "xlsx": ("Excel", ("xlsx",)), "spreadsheet": ("spreadsheet", ("xlsx", "csv", "tsv")),
    "表格": ("表格", ("xlsx", "csv", "tsv")), "markdown": ("Markdown", ("md",)), "md": ("Markdown", ("md",)),
    "html": ("HTML", ("html",)), "web page": ("HTML", ("html",)), "网页": ("HTML", ("html",)),
    "text": ("text", ("txt",)), "txt": ("text", ("txt",)), "plain text": ("text", ("txt",)), "文本": ("文本", ("txt",)),
    "csv": ("CSV", ("csv", "tsv")), "json": ("JSON", ("json", "jsonl")), "image": ("image", _IMAGES),
    "图片": ("图片", _IMAGES),
}
_TYPE_EN = (r"(?P<type>pdf|word|docx|excel|xlsx|spreadsheet|markdown|md|html|web page|plain text|text|txt|csv|json|"
            r"image)s?")
_TYPE_ZH = r"(?P<type>pdf|word|docx|excel|xlsx|表格|markdown|md|html|网页|文本|txt|csv|json|图片)"
_MENTION_EN = (r"(?:mention|mentions|mentioning|contain|contains|containing|refer to|refers to|talk about|talks about|"
               r"discuss|discusses|include|includes)")
_MENTION_ZH = r"(?:提到|提及|包含|含有|涉及|讲到|说到|出现)"
_TERM_EN = r"(?:the (?:word |term )?|a |an )?[\"“]?(?P<term>.+?)[\"”]?"
_NAMED_ZH = r"(?:文件名|文档名|名称|名字|标题)(?:里|中)?(?:包含|含有|带有?|有)"

_RULES: list[tuple[str, re.Pattern[str]]] = [(intent, re.compile(p)) for intent, p in [
    # documents of a type: "list the PDFs", "how many PDFs are there", "有哪些PDF文件"
    ("type", rf"^{_LISTV_EN}{_TYPE_EN}(?: {_DOCS_EN})?{_IN_KB_EN}$"),
    ("type", rf"^(?:what|which|how many) {_TYPE_EN}(?: {_DOCS_EN})? (?:are there|do you have|have you got|"
             rf"are (?:stored|indexed|loaded)|(?:are|do you have) in (?:the |this |your )?{_KB_EN})$"),
    ("type", rf"^{_IN_KB_ZH}(?:有哪些|列出(?:所有|全部)?的?|所有的?|(?:一共|总共|共)?有(?:多少|几){_CL_ZH}?){_TYPE_ZH}"
             rf"(?:格式)?的?{_DOCS_ZH}?$"),
    ("type", rf"^{_IN_KB_ZH}{_TYPE_ZH}(?:格式)?的?{_DOCS_ZH}?(?:有哪些|有多少{_CL_ZH}?)$"),
    # by tag: "documents tagged dept=hr", "标签为dept=hr的文档"
    ("tag", rf"^{_LIST_EN}{_DOCS_EN} (?:(?:that are|which are) )?(?:tagged|labell?ed|with (?:the )?(?:tag|label))"
            r" [\"“]?(?P<term>[^\s\"”]+)[\"”]?$"),
    ("tag", rf"^(?:which|what) {_DOCS_EN} (?:are|were|is|was) (?:tagged|labell?ed) [\"“]?(?P<term>[^\s\"”]+)[\"”]?$"),
    ("tag", rf"^(?:which|what) {_DOCS_EN} (?:have|has|carry|carries) (?:the )?(?:tag|label) "
            r"[\"“]?(?P<term>[^\s\"”]+)[\"”]?$"),
    ("tag", rf"^(?:标签|标记)(?:为|是)\s*(?P<term>\S+?)\s*的{_DOCS_ZH}(?:有哪些)?$"),
    ("tag", rf"^带有?(?:标签)?\s*(?P<term>\S+?)\s*(?:标签)?的{_DOCS_ZH}(?:有哪些)?$"),
    ("tag", rf"^哪些{_DOCS_ZH}(?:的标签是|带有?标签|标记为|标签为)\s*(?P<term>\S+?)(?:标签)?$"),
    # by name: "list documents named expense", "文件名包含考勤的文档"
    ("named", rf"^{_LIST_EN}{_DOCS_EN} (?:named|called|titled|whose (?:file ?)?(?:name|title)s? "
              rf"(?:contains?|includes?|has|have)) {_TERM_EN}$"),
    ("named", rf"^{_LIST_EN}{_DOCS_EN} with {_TERM_EN} in (?:the |their |its )?(?:file ?)?(?:name|title)s?$"),
    ("named", rf"^{_NAMED_ZH}(?P<term>.+?)的{_DOCS_ZH}(?:有哪些)?$"),
    ("named", rf"^哪些{_DOCS_ZH}的?{_NAMED_ZH}(?P<term>.+)$"),
    # added or changed within a period: "what was added this week", "本周新增的文档", "最近一周更新了哪些文档"
    ("recent", rf"^(?:what|which)(?: {_DOCS_EN})?(?:'s| (?:was|were|is|are|has been|have been|got))? {_VERB_EN}"
               rf"(?: to (?:the )?{_KB_EN})? {_PERIOD_EN}$"),
    ("recent", rf"^{_LIST_EN}(?:new |recent )?{_DOCS_EN} (?:(?:that|which) (?:were|was|have been|has been) )?"
               rf"{_VERB_EN}(?: to (?:the )?{_KB_EN})? {_PERIOD_EN}$"),
    ("recent", rf"^(?:are there |were there )?any (?:recently )?{_VERB_EN} {_DOCS_EN} {_PERIOD_EN}$"),
    ("recent", rf"^{_IN_KB_ZH}{_PERIOD_ZH}(?:有|都有)?(?:哪些)?{_VERB_ZH}(?:了|过)?(?:的|哪些|什么|几{_CL_ZH}|多少{_CL_ZH}?)?"
               rf"(?:新的?)?{_DOCS_ZH}?(?:有哪些|是哪些)?$"),
    ("recent", rf"^{_IN_KB_ZH}{_PERIOD_ZH}有(?:哪些|什么)?(?P<verb>新){_DOCS_ZH}$"),
    ("recent", rf"^哪些{_DOCS_ZH}是?{_PERIOD_ZH}{_VERB_ZH}的?$"),
    # newest / oldest: "list the newest documents", "show the 3 most recent files", "最新的文档有哪些"
    ("latest", rf"^{_LIST_EN}(?:{_NUM_EN} )?{_NEW_EN} (?:{_NUM2_EN} )?{_DOCS_EN}{_IN_KB_EN}$"),
    ("latest", rf"^(?:what|which) (?:are|were|is|was) (?:the )?(?:{_NUM_EN} )?{_NEW_EN} {_DOCS_EN}{_IN_KB_EN}$"),
    ("latest", rf"^which {_DOCS_EN} (?:was|were|is|are) (?:the )?(?P<order>most recently|last|latest|newest|oldest|"
               r"earliest|least recently)(?: (?P<verb>updated|modified|changed|added|uploaded|indexed))?$"),
    ("latest", rf"^{_IN_KB_ZH}{_NEW_ZH}的?{_NUM_ZH}?{_CL_ZH}?{_DOCS_ZH}(?:有哪些|是哪些|是(?P<one>哪个|哪篇|哪份|什么))?$"),
    ("latest", rf"^{_IN_KB_ZH}(?:哪些|(?P<one>哪个|哪篇|哪份)){_DOCS_ZH}(?:是)?{_NEW_ZH}的?$"),
    # how many documents
    ("count", rf"^how many {_DOCS_EN}\b.*(?:{_KB_EN}|\b(?:are there|do you have|have you got|"
              r"are (?:stored|indexed|loaded)|did (?:i|we) (?:upload|add|ingest)))\b.*$"),
    ("count", rf"^(?:what is |what's )?(?:the )?(?:total )?(?:number|count) of {_DOCS_EN}\b{_IN_KB_EN}$"),
    ("count", rf"{_KB_ZH}.{{0,8}}(?:多少|几){_CL_ZH}?{_DOCS_ZH}"),
    ("count", rf"^(?:一共|总共|共)?有(?:多少|几){_CL_ZH}?{_DOCS_ZH}$"),
    ("count", rf"^{_IN_KB_ZH}{_DOCS_ZH}(?:的)?(?:数量|总数|个数)(?:是多少|有多少)?$"),
    # list them all
    ("list", rf"^{_LIST_EN}{_DOCS_EN}{_IN_KB_EN}$"),
    ("list", rf"^(?:what|which) {_DOCS_EN} (?:are|do you have|have you got) "
             rf"(?:there|in (?:the |this |your )?{_KB_EN})$"),
    ("list", rf"^{_IN_KB_ZH}有(?:哪些|什么){_DOCS_ZH}$|^列出(?:所有|全部)?的?{_DOCS_ZH}$|^{_DOCS_ZH}列表$"),
    # which documents mention X
    ("mention", rf"^(?:which|what) {_DOCS_EN}(?: \w+)? {_MENTION_EN}\s+{_TERM_EN}$"),
    ("mention", rf"^{_LIST_EN}{_DOCS_EN} (?:(?:that|which) )?{_MENTION_EN}\s+{_TERM_EN}$"),
    ("mention", rf"^(?:哪些|哪个|哪篇|哪份){_DOCS_ZH}(?:里|中)?{_MENTION_ZH}了?(?P<term>.+?)$"),
    ("mention", rf"^{_MENTION_ZH}了?(?P<term>.+?)的{_DOCS_ZH}(?:有哪些|是哪些)?$"),
    # when was X last updated
    ("updated", r"^when (?:was|were|did) (?:the )?(?P<subject>.+?) (?:last )?(?:get )?"
                r"(?:updated|modified|changed|edited|revised)(?: last)?$"),
    ("updated", r"^(?:what is |what's )?(?:the )?(?:last[- ])?(?:modified|modification|update|updated) (?:date|time) "
                r"of (?:the )?(?P<subject>.+)$"),
    ("updated", r"^(?P<subject>.+?)(?:是)?(?:什么时候|何时|哪天)(?:最后)?(?:一次)?(?:更新|修改)的?$"),
    ("updated", r"^(?P<subject>.+?)的?(?:最后)?(?:一次)?(?:更新|修改)(?:时间|日期)(?:是)?(?:什么时候|哪天|多少)?$"),
]]
_ONE = {"a", "an", "the", "one"}


@dataclass(frozen=True)
class CollectionQuestion:
    intent: str  # "count" | "list" | "mention" | "latest" | "updated" | "recent" | "type" | "tag" | "named"
    term: str = ""  # what the documents must mention, the document named, the tag, the name part, the type word
    limit: int = 0  # latest: how many documents
    oldest: bool = False  # latest: the oldest instead of the newest
    period: str = ""  # recent: "today" | "yesterday" | "week" | "lastweek" | "month" | "lastmonth" | "year" | "days:N"
    added: bool = False  # latest / recent: by the time a document was indexed, not the file's modified time


def detect(question: str) -> CollectionQuestion | None:
    """The collection question this is, or None for an ordinary question."""
    text = " ".join(question.strip().split()).rstrip("?？.。!！ ")
    lowered = text.lower()
    for intent, pattern in _RULES:
        match = pattern.search(lowered)
        if match is None:
            continue
        groups = {k: v for k, v in match.groupdict().items() if v}
        name = "term" if "term" in groups else "subject" if "subject" in groups else ""
        term = text[match.start(name):match.end(name)] if name else groups.get("type", "")
        term = term.strip(" \"'“”‘’「」《》")
        if intent in ("mention", "updated", "tag", "named") and not term:
            continue
        if intent == "updated" and not _names_a_thing(term):
            continue
        verb = groups.get("verb", "")
        return CollectionQuestion(
            intent, term if intent in ("mention", "tag", "named") else term.lower(),
            limit=_limit(groups, lowered) if intent == "latest" else 0,
            oldest=groups.get("order", "") in ("oldest", "earliest", "least recently", "最早", "最旧", "最老"),
            period=_period(groups["period"]) if "period" in groups else "",
            added=verb in ("added", "new", "uploaded", "ingested", "indexed", "imported", "新增", "新加", "添加",
                           "加入", "上传", "收录", "导入", "新"))
    return None


def file_type(word: str) -> tuple[str, tuple[str, ...]]:
    """The label and the catalog formats of a type word ("pdf" -> ("PDF", ("pdf",)), "表格", ...)."""
    return _TYPES.get(word.lower(), (word, ()))


def _names_a_thing(subject: str) -> bool:
    """"When was it updated" and "这个文件什么时候更新的" name nothing the catalog could look up."""
    return subject.lower() not in {"it", "this", "that", "this document", "this file", "这个文件", "这个文档", "它", "这"}


def _limit(groups: dict[str, str], lowered: str) -> int:
    """How many documents "the newest ..." asks for: its number, 1 for "which document" / 哪个, else the default."""
    raw = groups.get("n") or groups.get("n2") or ""
    if raw:
        return max(1, _number(raw))
    singular = "one" in groups or re.search(r"\b(?:document|doc|file|article|record)\b", lowered)
    return 1 if singular else DEFAULT_NEWEST


def _number(raw: str) -> int:
    en = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "twenty": 20}
    if raw.isdigit():
        return int(raw)
    if raw in en:
        return en[raw]
    digits = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
    if "十" in raw:  # 十, 十五, 二十, 二十五
        tens, _, ones = raw.partition("十")
        return digits.get(tens, 1) * 10 + digits.get(ones, 0)
    return digits.get(raw, 1)


def _period(raw: str) -> str:
    """The canonical period of a phrase: "this week" -> "week", "in the last 3 days" -> "days:3"."""
    calendar = {"today": "today", "今天": "today", "今日": "today", "yesterday": "yesterday", "昨天": "yesterday",
                "this week": "week", "本周": "week", "这周": "week", "本星期": "week", "last week": "lastweek",
                "上周": "lastweek", "this month": "month", "本月": "month", "这个月": "month", "last month": "lastmonth",
                "上月": "lastmonth", "上个月": "lastmonth", "this year": "year", "今年": "year", "last year": "lastyear"}
    if raw in calendar:
        return calendar[raw]
    if re.fullmatch(r"这一?个?星期", raw):
        return "week"
    if re.fullmatch(r"上个?星期", raw):
        return "lastweek"
    n = re.search(r"\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten|twenty|[一二两三四五六七八九十]{1,3}", raw)
    count = _number(n.group()) if n else 1
    unit = 30 if re.search(r"month|月", raw) else 7 if re.search(r"week|周|星期|礼拜", raw) else 1
    return f"days:{count * unit}"
