"use strict";
const $ = (id) => document.getElementById(id);
const I18N = {
  en: {},
  zh: { title: "知识库控制台", kb: "知识库", apiKey: "API 密钥", language: "语言", chat: "对话", tabKbs: "知识库", tabDocs: "文档",
        tabTest: "检索测试", tabSettings: "设置", kbsHeading: "知识库", name: "名称", documents: "文档数", chunks: "分块",
        size: "大小", model: "嵌入模型", actions: "操作", newKb: "新建知识库", description: "描述", create: "创建",
        upload: "上传", dropHelp: "把文件拖到这里，或按回车选择文件", file: "文件", state: "状态", reason: "原因",
        docsHeading: "文档", filterName: "按名称筛选", refresh: "刷新", document: "文档", modified: "修改时间",
        ingested: "入库时间", tags: "标签", chunksInOrder: "分块（按顺序）", parsedText: "解析后的文本",
        testHeading: "检索测试", question: "问题", mode: "模式", filters: "过滤条件", shown: "显示条数",
        generate: "生成回答", run: "检索", settingsHeading: "设置（只读，密钥已隐藏）", allSettings: "全部设置",
        open: "打开", del: "删除", confirmDropKb: "确定删除知识库 “{0}” 及其全部文档吗？此操作无法撤销。",
        confirmDelDoc: "确定从知识库中删除 “{0}” 吗？", rerankOff: "重排序：关闭（没有模型）", rerankOn: "重排序",
        noKbs: "还没有知识库：在下方新建一个。", noDocs: "没有文档。", jobRunning: "正在入库", jobDone: "入库完成",
        summary: "已索引 {0}，未变化 {1}，跳过 {2}，新增分块 {3}", loading: "加载中…", textGone: "无法显示文本：",
        hits: "条结果", fused: "融合分", rerankScore: "重排序分", page: "页", span: "字符", noHits: "没有检索到内容。",
        needKey: "需要 API 密钥（401）。", forbidden: "这个密钥无权访问（403）。",
        kbsUnknown: "无法列出知识库（见上方提示）。", anyState: "全部", edit: "编辑", save: "保存", cancel: "取消",
        titleLabel: "标题", badTag: "标签 “{0}” 无效：请用 键=值", uploadTags: "上传时的标签", uploadEdits: "文件变化后，原有的分块编辑", editsKeep: "保留仍能对应到分块的编辑",
        editsDrop: "丢弃编辑", select: "选择",
        selected: "已选 {0} 个", bulkDelete: "删除所选", bulkTag: "添加标签", bulkTagsLabel: "给所选文档加标签",
        bulkDeleted: "已删除 {0} 个，未找到 {1} 个", bulkTagged: "已加标签 {0} 个，未找到 {1} 个", confirmBulkDelete: "确定删除所选的 {0} 个文档吗？", tag: "标签", prev: "‹ 上一页", next: "下一页 ›",
        tabKeys: "API 密钥", keysHeading: "API 密钥", keyId: "编号", keyPrefix: "开头", keyRead: "可读", keyWrite: "可写",
        created: "创建时间", newKey: "新建密钥", createKey: "创建密钥", revoke: "吊销", revoked: "已吊销", noKeys: "还没有密钥。",
        confirmRevoke: "确定吊销密钥 “{0}” 吗？使用它的程序会立即失效。", keyKbs: "知识库：{0}（或 * 表示全部）",
        secretOnce: "新密钥只显示这一次：请现在复制。服务器只保存它的哈希。", secretDone: "我已复制",
        keysNeedAdmin: "管理密钥需要管理员密钥：把 RAG_API_ADMIN_KEY 的值填到上方的 API 密钥框。",
        keysNotAdmin: "只有管理员密钥（RAG_API_ADMIN_KEY）可以管理密钥：把它填到上方的 API 密钥框。",
        keysNoAdmin: "这台服务器没有设置管理员密钥（RAG_API_ADMIN_KEY）：在服务器上用 rag keys create 创建密钥，或设置 RAG_API_ADMIN_KEY 并重启后在这里管理。",
        keysAuthOff: "认证已关闭（RAG_AUTH_DISABLED=true）：任何请求都不需要密钥。在这里创建的密钥会在重新开启认证后生效。",
        perPage: "每页", range: "第 {0}–{1} 条，共 {2} 条", moreChunks: "更多分块（已显示 {0}/{1}）",
        disable: "停用", enable: "启用", disabledPill: "已停用", editedPill: "已编辑", manualPill: "手动添加",
        keywords: "关键词", keywordsHelp: "关键词（逗号分隔）", questionsHelp: "问题（每行一个）", questionsLabel: "问题",
        textLabel: "文本", addHeading: "给这个文档添加分块", addText: "文本", addQa: "问答对", questionLabel: "问题",
        indexed: "已索引", pending: "写入中", deleting: "删除中", days7: "近 7 天", days30: "近 30 天", days90: "近 90 天",
        keyReadHint: "handbook, manuals 或 *", keyWriteHint: "handbook 或 *", bearerKey: "Bearer 密钥", kind_text: "文本", kind_qa: "问答",
        answerLabel: "答案", add: "添加", chunkSaved: "分块已保存", chunkAdded: "分块已添加", deleteChunk: "删除", chunkDeleted: "分块已删除", confirmDelChunk: "删除手动添加的分块 #{0}？",
        originalText: "原文：",
        matchedBy: "匹配问题：", generated: "生成的问题：" },
};
const EN = { open: "Open", del: "Delete", confirmDropKb: "Delete the knowledge base “{0}” and all its documents? This cannot be undone.",
        confirmDelDoc: "Remove “{0}” from the knowledge base?", rerankOff: "reranking: off (no model)", rerankOn: "rerank",
        noKbs: "No knowledge base yet: create one below.", noDocs: "No documents.", jobRunning: "Ingesting", jobDone: "Ingest finished",
        summary: "indexed {0}, unchanged {1}, skipped {2}, chunks added {3}", loading: "Loading…", textGone: "Cannot show the text: ",
        hits: "hits", fused: "fused", rerankScore: "rerank", page: "page", span: "chars", noHits: "Nothing retrieved.",
        needKey: "An API key is needed (401).", forbidden: "This key may not do that (403).",
        kbsUnknown: "The knowledge bases cannot be listed (see above).", range: "{0}–{1} of {2}",
        edit: "Edit", save: "Save", cancel: "Cancel", titleLabel: "Title", tags: "Tags",
        badTag: "invalid tag “{0}”: use key=value", select: "Select", selected: "{0} selected",
        bulkDeleted: "deleted {0}, not found {1}", bulkTagged: "tagged {0}, not found {1}",
        confirmBulkDelete: "Delete the {0} selected documents?", revoke: "Revoke", revoked: "revoked", noKeys: "No keys yet.",
        confirmRevoke: "Revoke the key “{0}”? Programs using it stop working at once.",
        keyKbs: "Knowledge bases: {0} (or * for all)",
        keysNeedAdmin: "Managing keys needs the admin key: paste the value of RAG_API_ADMIN_KEY into the API key box above.",
        keysNotAdmin: "Only the admin key (RAG_API_ADMIN_KEY) may manage keys: paste it into the API key box above.",
        keysNoAdmin: "This server has no admin key (RAG_API_ADMIN_KEY is not set): create keys on the server with rag keys create, or set RAG_API_ADMIN_KEY and restart to manage them here.",
        keysAuthOff: "Authentication is off (RAG_AUTH_DISABLED=true): every request is allowed without a key. Keys made here take effect once authentication is on again.",
        moreChunks: "More chunks ({0} of {1} shown)", disable: "Disable", enable: "Enable", disabledPill: "disabled",
        editedPill: "edited", manualPill: "added by hand", keywords: "Keywords", keywordsHelp: "Keywords (comma-separated)",
        questionsHelp: "Questions (one per line)", questionsLabel: "Questions", textLabel: "Text", chunkSaved: "chunk saved",
        chunkAdded: "chunk added", indexed: "indexed", pending: "pending", deleting: "deleting", kind_text: "text", kind_qa: "qa",
        deleteChunk: "Delete", chunkDeleted: "chunk deleted", confirmDelChunk: "Delete chunk #{0}, added by hand?",
        originalText: "Original: ", matchedBy: "matched by: ", generated: "generated questions: " };
let lang = localStorage.getItem("rag-lang") || ((navigator.language || "").startsWith("zh") ? "zh" : "en");
const t = (key, ...args) => {
  let s = (I18N[lang] || {})[key] || EN[key] || key;
  args.forEach((a, i) => { s = s.replace(`{${i}}`, a); });
  return s;
};
const DOC_COLS = 9;
const state = { editing: null, picked: new Set(), kbs: undefined, docs: [], docsTotal: 0, docsOffset: 0, system: null, selectedDoc: null, chunks: [],
                chunksTotal: 0, text: null };

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  $("lang").value = lang;
  document.querySelectorAll("[data-i18n]").forEach((e) => {
    if (!e.dataset.en) e.dataset.en = e.textContent;
    e.textContent = lang === "en" ? e.dataset.en : ((I18N[lang] || {})[e.dataset.i18n] || e.dataset.en);
  });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((e) => {
    if (!e.dataset.enPlaceholder) e.dataset.enPlaceholder = e.placeholder;
    e.placeholder = lang === "en" ? e.dataset.enPlaceholder : ((I18N[lang] || {})[e.dataset.i18nPlaceholder] || e.dataset.enPlaceholder);
  });
  renderRerank(); renderKbs(); renderDocs();
}
$("lang").addEventListener("change", () => { lang = $("lang").value; localStorage.setItem("rag-lang", lang); applyLanguage(); });

$("key").value = localStorage.getItem("rag-api-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("rag-api-key", $("key").value.trim()); reloadAll(); });

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = $("key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
function say(text, isError) { $("status").textContent = text || ""; $("status").className = isError ? "error" : "muted"; }
async function api(method, path, body, isForm) { return (await call(method, path, body, isForm)).data; }
// the body and the response (for headers such as X-Total-Count); errors carry the field the server named
async function call(method, path, body, isForm) {
  const init = { method, headers: headers(body !== undefined && !isForm) };
  if (body !== undefined) init.body = isForm ? body : JSON.stringify(body);
  const r = await fetch(path, init);
  if (r.status === 204) return { data: null, response: r };
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = (data && data.error) || {};
    const msg = r.status === 401 ? t("needKey") : r.status === 403 ? t("forbidden") : (err.message || `HTTP ${r.status}`);
    const error = new Error(msg + (err.field && r.status === 422 ? ` (${err.field})` : ""));
    error.status = r.status; error.detail = err.message || ""; error.field = err.field || "";
    throw error;
  }
  return { data, response: r };
}
const fmtSize = (n) => n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`;
const fmtTime = (s) => s ? new Date(s * 1000).toLocaleString(lang === "zh" ? "zh-CN" : undefined) : "";
const currentKb = () => $("kb").value;
const enc = encodeURIComponent;

// tabs: click, or arrow keys inside the tab list
const tabs = [...document.querySelectorAll("[role=tab]")];
function selectTab(tab) {
  tabs.forEach((b) => {
    const on = b === tab;
    b.setAttribute("aria-selected", on ? "true" : "false");
    b.tabIndex = on ? 0 : -1;
    $(b.getAttribute("aria-controls")).classList.toggle("active", on);
  });
  if (tab.id === "tab-docs") loadDocs();
  if (tab.id === "tab-settings") loadSystem();
  if (tab.id === "tab-keys") loadKeys();
  if (tab.id === "tab-usage") { neverOffset = 0; loadUsage(); }  // console-kb.js
}
tabs.forEach((b, i) => {
  b.addEventListener("click", () => selectTab(b));
  b.addEventListener("keydown", (ev) => {
    const d = ev.key === "ArrowRight" ? 1 : ev.key === "ArrowLeft" ? -1 : 0;
    if (d) { const next = tabs[(i + d + tabs.length) % tabs.length]; next.focus(); selectTab(next); }
  });
});

// knowledge bases ------------------------------------------------------------------------------
async function loadKbs() {
  try {
    state.kbs = await api("GET", "/v1/kbs");
    showKeyHelp(null);
    const select = $("kb"), saved = localStorage.getItem("rag-kb") || select.value;
    select.innerHTML = "";
    for (const kb of state.kbs) select.appendChild(el("option", null, kb.name)).value = kb.name;
    if (state.kbs.some((k) => k.name === saved)) select.value = saved;
    renderKbs();
    say("");
  } catch (e) { state.kbs = null; showKeyHelp(e); renderKbs(); say(e.message, true); }
}
// first run: without a (valid) key the list call answers 401/403; say how to make a key, and
// never claim there is no knowledge base when the list could not be read (state.kbs null)
function showKeyHelp(error) {
  const status = error && error.status;
  $("key-help").hidden = status !== 401 && status !== 403;
  if (status === 401 || status === 403) {
    $("key-help-reason").textContent = t(status === 401 ? "needKey" : "forbidden") + (error.detail ? " " + error.detail : "");
  }
}
function renderKbs() {
  const body = $("kbs-table").tBodies[0];
  body.innerHTML = "";
  const empty = state.kbs === undefined ? t("loading") : state.kbs === null ? t("kbsUnknown") : !state.kbs.length ? t("noKbs") : "";
  if (empty) { const tr = body.insertRow(); const td = tr.insertCell(); td.colSpan = 6; td.textContent = empty; }
  for (const kb of state.kbs || []) {
    const tr = body.insertRow();
    if (kb.name === currentKb()) tr.className = "selected";
    tr.insertCell().textContent = kb.name + (kb.description ? ` — ${kb.description}` : "");
    const cells = [kb.documents, kb.chunks, fmtSize(kb.bytes)];
    cells.forEach((v) => { const c = tr.insertCell(); c.className = "num"; c.textContent = v; });
    const model = tr.insertCell(); model.textContent = `${kb.embed_model} (${kb.dim})`;
    if (kb.reembed_needed) { model.appendChild(el("span", "pill warn", t("reembedPill"))).title = t("reembedPillTitle"); }
    const actions = tr.insertCell();
    const open = el("button", "secondary", t("open"));
    open.type = "button"; open.setAttribute("aria-label", `${t("open")} ${kb.name}`);
    open.addEventListener("click", () => { $("kb").value = kb.name; localStorage.setItem("rag-kb", kb.name); state.docsOffset = 0; selectTab($("tab-docs")); });
    const del = el("button", "danger", t("del"));
    del.type = "button"; del.setAttribute("aria-label", `${t("del")} ${kb.name}`);
    del.addEventListener("click", async () => {
      if (!confirm(t("confirmDropKb", kb.name))) return;
      try { await api("DELETE", `/v1/kbs/${enc(kb.name)}`); await loadKbs(); } catch (e) { say(e.message, true); }
    });
    actions.append(open, " ", del);
  }
}
$("create-kb").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("new-kb").value.trim();
  try {
    await api("POST", "/v1/kbs", { name, description: $("new-kb-desc").value.trim() });
    localStorage.setItem("rag-kb", name);
    $("new-kb").value = ""; $("new-kb-desc").value = "";
    await loadKbs();
    say(`${name} ✓`);
  } catch (e) { say(e.message, true); }
});
$("kb").addEventListener("change", () => { localStorage.setItem("rag-kb", currentKb()); renderKbs(); state.docsOffset = 0; loadDocs(); });

// upload ----------------------------------------------------------------------------------------
const drop = $("drop");
drop.addEventListener("click", () => $("files").click());
drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("files").click(); } });
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); upload(ev.dataTransfer.files); });
$("files").addEventListener("change", () => { upload($("files").files); $("files").value = ""; });

async function upload(fileList) {
  const files = [...(fileList || [])];
  if (!files.length || !currentKb()) return;
  const form = new FormData();
  files.forEach((f) => form.append("files", f, f.name));
  if ($("upload-tags").value.trim()) form.append("tags", $("upload-tags").value.trim());
  form.append("edits", $("upload-edits").value);  // what a changed file's re-ingest does with its chunk edits
  $("job").hidden = false;
  $("job-summary").textContent = "";
  try {
    const accepted = await api("POST", `/v1/kbs/${enc(currentKb())}/documents`, form, true);
    await pollJob(accepted.job_id);
    loadJobs();  // console-kb.js
  } catch (e) { $("job-status").textContent = e.message; $("job-status").className = "error"; }
}
async function pollJob(jobId) {
  for (;;) {
    const job = await api("GET", `/v1/jobs/${enc(jobId)}`);
    renderJob(job);
    if (!["queued", "running"].includes(job.status)) { await loadDocs(); await loadKbs(); return job; }
    await new Promise((r) => setTimeout(r, 400));
  }
}
function renderJob(job) {
  const p = job.progress || {};
  const reindex = job.kind === "reindex", running = ["queued", "running"].includes(job.status);
  const done = reindex ? t(running ? "reembedRunning" : "reembedFinished") : t(running ? "jobRunning" : "jobDone");
  $("job-files").hidden = reindex;
  if (reindex) {  // no files: chunks embedded of those the knowledge base has (console-kb.js)
    $("job-status").textContent = `${done}: ${job.status} — ${t("reembedProgress", p.chunks_done || 0, p.chunks_known || 0)}`;
  } else {
    const chunkInfo = p.chunks_total ? `, ${p.chunks_done || 0}/${p.chunks_total} chunks` : p.chunks_done ? `, ${p.chunks_done} chunks` : "";
    $("job-status").textContent = `${done}: ${job.status} — ${p.files_done || 0}/${p.files_total || job.files.length} files${chunkInfo}`;
  }
  $("job-status").className = job.status === "failed" ? "error" : job.status === "succeeded" ? "ok" : "";
  const frac = reindex ? (p.chunks_done || 0) / Math.max(p.chunks_known || 0, 1)
    : p.chunks_total ? (p.chunks_done || 0) / p.chunks_total : (p.files_done || 0) / Math.max(p.files_total || job.files.length, 1);
  $("job-bar").style.width = `${Math.round(100 * (["queued", "running"].includes(job.status) ? frac : 1))}%`;
  const body = $("job-files").tBodies[0];
  body.innerHTML = "";
  for (const f of job.files) {  // each file's state as soon as it has one, OCR pages as they are read
    const tr = body.insertRow();
    if (job.current_file === f.filename && ["queued", "running"].includes(job.status)) tr.className = "selected";
    tr.insertCell().textContent = f.filename;
    const st = tr.insertCell(); st.textContent = f.status;
    st.className = f.status === "skipped" || f.status === "failed" ? "error" : ["indexed", "updated", "unchanged"].includes(f.status) ? "ok" : "";
    const pg = tr.insertCell(); pg.className = "num"; pg.textContent = f.pages_total ? `${f.pages_done}/${f.pages_total}` : "";
    const c = tr.insertCell(); c.className = "num"; c.textContent = f.chunks_added ?? "";
    tr.insertCell().textContent = f.reason || "";
  }
  if (job.kind === "reindex") {
    $("job-summary").textContent = job.error || (job.summary ? t("reembedSummary", job.summary.chunks, job.summary.embed_model, job.summary.dim) : "");
  } else if (job.summary) {
    const s = job.summary;
    $("job-summary").textContent = t("summary", s.indexed, s.unchanged, s.skipped, s.chunks_added) +
      (s.seconds !== undefined ? ` · ${s.seconds.toFixed(1)} s` : "");
  }
}

// documents and chunks --------------------------------------------------------------------------
// one page at a time, searched and filtered by the server (q, state, tag); X-Total-Count gives the total
const pageSize = () => Number($("docs-size").value) || 50;
async function loadDocs() {
  $("upload-kb").textContent = currentKb() ? `→ ${currentKb()}` : "";
  $("docs-error").textContent = "";
  if (!currentKb()) { state.docs = []; state.docsTotal = 0; renderDocs(); return; }
  const params = new URLSearchParams({ limit: pageSize(), offset: state.docsOffset });
  const q = $("doc-filter").value.trim(), st = $("doc-state").value, tag = $("doc-tag").value.trim();
  if (q) params.set("q", q);
  if (st) params.set("state", st);
  if (tag) params.set("tag", tag);
  try {
    const { data, response } = await call("GET", `/v1/kbs/${enc(currentKb())}/documents?${params}`);
    state.docs = data; state.docsTotal = Number(response.headers.get("X-Total-Count") || data.length);
    const onPage = new Set(data.map((d) => d.doc_id));
    state.picked = new Set([...state.picked].filter((id) => onPage.has(id)));  // a selection is of this page
    if (!data.length && state.docsOffset > 0 && state.docsTotal > 0) {  // the page emptied (deletes): back one
      state.docsOffset = Math.max(0, Math.floor((state.docsTotal - 1) / pageSize()) * pageSize()); return loadDocs();
    }
  } catch (e) { state.docs = []; state.docsTotal = 0; $("docs-error").textContent = e.message; }
  renderDocs();
}
let searchTimer = null;
const searchDocs = () => { state.docsOffset = 0; loadDocs(); };
$("doc-filter").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(searchDocs, 250); });
$("doc-state").addEventListener("change", searchDocs);
$("docs-size").addEventListener("change", searchDocs);
$("doc-search").addEventListener("submit", (ev) => { ev.preventDefault(); clearTimeout(searchTimer); searchDocs(); });
$("docs-prev").addEventListener("click", () => { state.docsOffset = Math.max(0, state.docsOffset - pageSize()); loadDocs(); });
$("docs-next").addEventListener("click", () => { state.docsOffset += pageSize(); loadDocs(); });
function renderPager() {
  const first = state.docs.length ? state.docsOffset + 1 : 0, last = state.docsOffset + state.docs.length;
  $("docs-range").textContent = t("range", first, last, state.docsTotal);
  $("docs-prev").disabled = state.docsOffset === 0;
  $("docs-next").disabled = last >= state.docsTotal;
}
function renderDocs() {
  const body = $("docs-table").tBodies[0];
  body.innerHTML = "";
  const docs = state.docs;
  renderPager(); renderBulk();
  if (!docs.length) { const td = body.insertRow().insertCell(); td.colSpan = DOC_COLS; td.textContent = t("noDocs"); }
  for (const d of docs) {
    const tr = body.insertRow();
    if (state.selectedDoc === d.doc_id) tr.className = "selected";
    const pick = el("input"); pick.type = "checkbox"; pick.checked = state.picked.has(d.doc_id);
    pick.setAttribute("aria-label", `${t("select")} ${d.source}`); pick.className = "pick";
    pick.addEventListener("change", () => { if (pick.checked) state.picked.add(d.doc_id); else state.picked.delete(d.doc_id); renderBulk(); });
    const pc = tr.insertCell(); pc.className = "pick"; pc.appendChild(pick);
    const name = tr.insertCell();
    name.textContent = d.source;
    if (d.title && d.title !== d.source) name.appendChild(el("div", "muted", d.title));
    [d.chunks, fmtSize(d.size)].forEach((v) => { const c = tr.insertCell(); c.className = "num"; c.textContent = v; });
    tr.insertCell().textContent = fmtTime(d.mtime);
    tr.insertCell().textContent = fmtTime(d.ingested_at);
    tr.insertCell().textContent = tagText(d.tags);
    const st = tr.insertCell(); st.textContent = t(d.state);
    for (const marker of ["ocr", "version_of"]) if (d[marker]) st.appendChild(el("span", "pill", marker));
    const actions = tr.insertCell();
    const open = el("button", "secondary", t("open"));
    open.type = "button"; open.setAttribute("aria-label", `${t("open")} ${d.source}`);
    open.addEventListener("click", () => openDoc(d));
    const del = el("button", "danger", t("del"));
    del.type = "button"; del.setAttribute("aria-label", `${t("del")} ${d.source}`);
    del.addEventListener("click", async () => {
      if (!confirm(t("confirmDelDoc", d.source))) return;
      try {
        await api("DELETE", `/v1/kbs/${enc(currentKb())}/documents/${enc(d.doc_id)}`);
        if (state.selectedDoc === d.doc_id) { state.selectedDoc = null; $("doc-view").hidden = true; }
        await loadDocs(); await loadKbs();
      } catch (e) { say(e.message, true); }
    });
    const edit = el("button", "secondary", t("edit"));
    edit.type = "button"; edit.setAttribute("aria-label", `${t("edit")} ${d.source}`);
    edit.addEventListener("click", () => { state.editing = state.editing === d.doc_id ? null : d.doc_id; renderDocs(); });
    actions.append(open, " ", edit, " ", del);
    if (state.editing === d.doc_id) editorRow(body, d);
  }
}
// bulk: the selected documents of this page deleted or tagged in one call, with a result per id
function renderBulk() {
  const n = state.picked.size;
  $("bulk-count").textContent = t("selected", n);
  $("bulk-delete").disabled = !n; $("bulk-tag").disabled = !n; $("bulk-reparse").disabled = !n;
  const all = $("select-page");
  all.checked = n > 0 && state.docs.every((d) => state.picked.has(d.doc_id));
  all.indeterminate = n > 0 && !all.checked;
}
$("select-page").addEventListener("change", () => {
  state.picked = $("select-page").checked ? new Set(state.docs.map((d) => d.doc_id)) : new Set();
  renderDocs();
});
async function bulk(body) {
  $("bulk-result").textContent = ""; $("bulk-result").className = "muted";
  try {
    const r = await api("POST", `/v1/kbs/${enc(currentKb())}/documents/bulk`, { ...body, doc_ids: [...state.picked] });
    state.picked = new Set();
    if (r.action === "delete" && r.results.some((x) => x.doc_id === state.selectedDoc)) { state.selectedDoc = null; $("doc-view").hidden = true; }
    await loadDocs();
    if (r.action === "delete") await loadKbs();
    $("bulk-result").textContent = t(r.action === "delete" ? "bulkDeleted" : "bulkTagged", r.done, r.not_found);
  } catch (e) { $("bulk-result").textContent = e.message; $("bulk-result").className = "error"; }
}
$("bulk-delete").addEventListener("click", () => { if (confirm(t("confirmBulkDelete", state.picked.size))) bulk({ action: "delete" }); });
$("bulk-bar").addEventListener("submit", (ev) => {
  ev.preventDefault();
  let tags;
  try { tags = parseTags($("bulk-tags").value); } catch (e) { $("bulk-result").textContent = e.message; $("bulk-result").className = "error"; return; }
  bulk({ action: "tag", tags });
});
const tagText = (tags) => Object.entries(tags || {}).map(([k, v]) => `${k}=${v}`).join(", ");
// "team=hr, lang=en" -> {team: "hr", lang: "en"}; throws naming the bad item (the server checks the rest)
function parseTags(text) {
  const tags = {};
  for (const item of text.split(/[,，]/).map((s) => s.trim()).filter(Boolean)) {
    const at = item.indexOf("=");
    if (at <= 0 || at === item.length - 1) throw new Error(t("badTag", item));
    tags[item.slice(0, at).trim()] = item.slice(at + 1).trim();
  }
  return tags;
}
// a row under the document: its title and tags, saved with PATCH; errors (the field the server names) shown in it
function editorRow(body, d) {
  const td = body.insertRow().insertCell(); td.colSpan = DOC_COLS; td.className = "editor";
  const form = el("form", "row");
  const title = el("input"); title.type = "text"; title.value = d.title || ""; title.size = 24; title.id = "edit-title";
  const tags = el("input"); tags.type = "text"; tags.value = tagText(d.tags); tags.size = 32; tags.id = "edit-tags";
  tags.placeholder = "team=hr, lang=en";
  const lt = el("label", "field"); lt.append(el("span", null, t("titleLabel")), " ", title);
  const lg = el("label", "field"); lg.append(el("span", null, t("tags")), " ", tags);
  const save = el("button", null, t("save")); save.type = "submit";
  const cancel = el("button", "secondary", t("cancel")); cancel.type = "button";
  const error = el("p", "error"); error.setAttribute("role", "alert"); error.id = "edit-error";
  cancel.addEventListener("click", () => { state.editing = null; renderDocs(); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const patch = { tags: parseTags(tags.value) };
      if (title.value.trim() && title.value.trim() !== d.title) patch.title = title.value.trim();
      await api("PATCH", `/v1/kbs/${enc(currentKb())}/documents/${enc(d.doc_id)}`, patch);
      state.editing = null; await loadDocs(); say(`${d.source} ✓`);
    } catch (e) { error.textContent = e.message; (e.field === "title" ? title : tags).focus(); }
  });
  form.append(lt, lg, save, cancel);
  td.append(form, error);
  tags.focus();
}
async function openDoc(d) {
  state.selectedDoc = d.doc_id; renderDocs();
  $("doc-view").hidden = false;
  $("doc-title").textContent = d.title || d.source;
  $("doc-meta").textContent = t("loading");
  $("chunk-list").innerHTML = ""; $("doc-text").textContent = "";
  const base = `/v1/kbs/${enc(currentKb())}/documents/${enc(d.doc_id)}`;
  state.chunks = []; state.chunksDoc = d;
  try { await loadChunks(); } catch (e) { $("doc-meta").textContent = e.message; $("doc-meta").className = "error"; return; }
  try { state.text = (await api("GET", `${base}/text`)).text; showText(null); }
  catch (e) { state.text = null; $("doc-text").textContent = t("textGone") + e.message; }
  $("doc-view").scrollIntoView({ block: "start" });
}
const CHUNK_PAGE = 50;
async function loadChunks(limit) {  // the next page of the open document's chunks
  const d = state.chunksDoc;
  const data = await api("GET", `/v1/kbs/${enc(currentKb())}/documents/${enc(d.doc_id)}/chunks?limit=${limit || CHUNK_PAGE}&offset=${state.chunks.length}`);
  state.chunks = state.chunks.concat(data.chunks); state.chunksTotal = data.total;
  $("doc-meta").className = "muted";
  $("doc-meta").textContent = `${d.source} · ${data.total} ${t("chunks")} · ${d.format}` + (data.missing ? ` · ${data.missing} missing` : "");
  $("more-chunks").hidden = state.chunks.length >= data.total;
  $("more-chunks").textContent = t("moreChunks", state.chunks.length, data.total);
  renderChunks();
}
$("more-chunks").addEventListener("click", async () => { try { await loadChunks(); } catch (e) { say(e.message, true); } });
// the chunks loaded so far read again (after an edit: ids change), as many as were shown
async function reloadChunks() { const n = Math.max(state.chunks.length + 1, CHUNK_PAGE); state.chunks = []; await loadChunks(n); }
function renderChunks() {
  const list = $("chunk-list");
  list.innerHTML = "";
  state.chunks.forEach((c, i) => {
    const edit = c.edit || {};
    const box = el("div", "chunk" + (c.disabled ? " disabled" : ""));
    box.tabIndex = 0; box.setAttribute("role", "button"); box.dataset.index = i; box.dataset.chunkId = c.chunk_id;
    const where = [c.section_path.join(" > "), c.page !== null && c.page !== undefined ? `${t("page")} ${c.page}` : "",
                   edit.manual ? "" : `${t("span")} ${c.start}–${c.end}`].filter(Boolean).join(" · ");
    const meta = el("div", "meta", `#${i + 1}` + (where ? ` · ${where}` : ""));
    meta.appendChild(el("span", "pill" + (c.kind === "qa" ? " qa" : ""), t(`kind_${c.kind}`).replace(/^kind_/, "")));  // an unnamed kind as it is
    if (c.disabled) meta.appendChild(el("span", "pill off", t("disabledPill")));
    if (edit.edited) meta.appendChild(el("span", "pill edited", t("editedPill")));
    if (edit.manual) meta.appendChild(el("span", "pill edited", t("manualPill")));
    box.append(meta, el("div", "text", c.text));
    if (edit.edited && edit.original_text) box.appendChild(el("div", "meta original", t("originalText") + edit.original_text));
    if (c.kind === "qa" && c.embed_text && !(edit.keywords || []).length && !(edit.questions || []).length) {
      box.appendChild(el("div", "meta", t("matchedBy") + c.embed_text));
    }
    if ((edit.keywords || []).length) box.appendChild(el("div", "meta terms", `${t("keywords")}: ${edit.keywords.join(", ")}`));
    if ((edit.questions || []).length) box.appendChild(el("div", "meta terms", `${t("questionsLabel")}: ${edit.questions.join(" | ")}`));
    if (c.questions && c.questions.length) box.appendChild(el("div", "meta", t("generated") + c.questions.join(" | ")));
    const actions = el("div", "row chunk-actions");
    const editBtn = el("button", "secondary", t("edit")); editBtn.type = "button";
    const toggle = el("button", c.disabled ? "secondary" : "danger", c.disabled ? t("enable") : t("disable")); toggle.type = "button";
    editBtn.setAttribute("aria-label", `${t("edit")} #${i + 1}`); toggle.setAttribute("aria-label", `${toggle.textContent} #${i + 1}`);
    const error = el("span", "error"); error.setAttribute("role", "alert");
    actions.append(editBtn, toggle);
    if (edit.manual) {  // a chunk of the file comes back with a re-ingest: it is disabled instead
      const del = el("button", "danger", t("deleteChunk")); del.type = "button";
      del.setAttribute("aria-label", `${t("deleteChunk")} #${i + 1}`);
      del.addEventListener("click", async (ev) => {
        ev.stopPropagation(); error.textContent = "";
        if (!confirm(t("confirmDelChunk", i + 1))) return;
        try {
          await api("DELETE", `/v1/kbs/${enc(currentKb())}/chunks/${enc(c.chunk_id)}`);
          await reloadChunks(); say(t("chunkDeleted")); loadDocs();
        } catch (e) { error.textContent = e.message; }
      });
      actions.appendChild(del);
    }
    actions.appendChild(error);
    box.appendChild(actions);
    editBtn.addEventListener("click", (ev) => { ev.stopPropagation(); editChunk(box, c); });
    toggle.addEventListener("click", async (ev) => {
      ev.stopPropagation(); error.textContent = "";
      try { await patchChunk(c, { disabled: !c.disabled }); } catch (e) { error.textContent = e.message; }
    });
    const pick = () => { list.querySelectorAll(".chunk").forEach((x) => x.classList.remove("selected")); box.classList.add("selected"); showText(edit.manual ? null : c); };
    box.addEventListener("click", pick);
    box.addEventListener("keydown", (ev) => { if (ev.target === box && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); pick(); } });
    list.appendChild(box);
  });
}
async function patchChunk(c, body) {
  await api("PATCH", `/v1/kbs/${enc(currentKb())}/chunks/${enc(c.chunk_id)}`, body);
  await reloadChunks(); say(t("chunkSaved"));
}
const splitTerms = (text, sep) => text.split(sep).map((x) => x.trim()).filter(Boolean);
// the chunk's editor in its place: text, keywords, questions; saved as one PATCH (only what changed)
function editChunk(box, c) {
  const edit = c.edit || {};
  const form = el("form", "chunk-editor");
  form.addEventListener("click", (ev) => ev.stopPropagation());
  const field = (label, input) => { const l = el("label", "field stack"); l.append(el("span", null, label), input); return l; };
  const text = el("textarea"); text.rows = 5; text.value = c.text; text.name = "text";
  const keywords = el("input"); keywords.type = "text"; keywords.value = (edit.keywords || []).join(", "); keywords.name = "keywords";
  const questions = el("textarea"); questions.rows = 2; questions.value = (edit.questions || []).join("\n"); questions.name = "questions";
  const save = el("button", null, t("save")); save.type = "submit";
  const cancel = el("button", "secondary", t("cancel")); cancel.type = "button";
  const error = el("span", "error"); error.setAttribute("role", "alert");
  const buttons = el("div", "row"); buttons.append(save, cancel, error);
  form.append(field(t("textLabel"), text), field(t("keywordsHelp"), keywords), field(t("questionsHelp"), questions), buttons);
  box.querySelector(".text").replaceWith(form);
  box.querySelector(".chunk-actions").hidden = true;
  box.querySelectorAll(".terms, .original").forEach((x) => { x.hidden = true; });
  cancel.addEventListener("click", () => renderChunks());
  form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") renderChunks(); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault(); error.textContent = "";
    const body = {};
    if (text.value !== c.text) body.text = text.value;
    const kw = splitTerms(keywords.value, /[,，]/), qs = splitTerms(questions.value, /\n/);
    if (kw.join("\n") !== (edit.keywords || []).join("\n")) body.keywords = kw;
    if (qs.join("\n") !== (edit.questions || []).join("\n")) body.questions = qs;
    if (!Object.keys(body).length) { renderChunks(); return; }
    try { await patchChunk(c, body); }
    catch (e) { error.textContent = e.message; ({ keywords, questions }[e.field] || text).focus(); }
  });
  text.focus();
}
// adding a chunk (a text, or a question and its answer) to the open document
document.querySelectorAll("input[name=add-kind]").forEach((r) => r.addEventListener("change", () => {
  const qa = document.querySelector("input[name=add-kind]:checked").value === "qa";
  $("add-text-label").hidden = qa; $("add-question-label").hidden = !qa; $("add-answer-label").hidden = !qa;
}));
$("add-chunk").addEventListener("submit", async (ev) => {
  ev.preventDefault(); $("add-error").textContent = "";
  const qa = document.querySelector("input[name=add-kind]:checked").value === "qa";
  const body = qa ? { question: $("add-question").value, answer: $("add-answer").value } : { text: $("add-text").value };
  try {
    await api("POST", `/v1/kbs/${enc(currentKb())}/documents/${enc(state.chunksDoc.doc_id)}/chunks`, body);
    $("add-text").value = ""; $("add-question").value = ""; $("add-answer").value = "";
    await reloadChunks(); say(t("chunkAdded")); loadDocs();  // the document's chunk count
  } catch (e) {
    $("add-error").textContent = e.message;
    ({ question: $("add-question"), answer: $("add-answer") }[e.field] || (qa ? $("add-question") : $("add-text"))).focus();
  }
});
// the parsed text with the chunk's [start, end) span highlighted and scrolled into view
function showText(chunk) {
  const pane = $("doc-text");
  pane.textContent = "";
  if (state.text === null) return;
  if (!chunk) { pane.textContent = state.text; return; }
  pane.append(document.createTextNode(state.text.slice(0, chunk.start)));
  const mark = el("mark", null, state.text.slice(chunk.start, chunk.end));
  mark.id = "chunk-mark";
  pane.append(mark, document.createTextNode(state.text.slice(chunk.end)));
  mark.scrollIntoView({ block: "center" });
}

// retrieval test --------------------------------------------------------------------------------
function renderRerank() {
  const on = state.system && state.system.reranker && state.system.reranker.enabled;
  $("test-rerank").disabled = !on;
  $("test-rerank").checked = !!on;
  $("rerank-text").textContent = on ? `${t("rerankOn")} (${state.system.reranker.name || ""})` : t("rerankOff");
}
$("test-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const filters = $("test-filters").value.split(/[,，]/).map((s) => s.trim()).filter(Boolean);
  const body = { question: $("test-q").value, kb: currentKb() || null, mode: $("test-mode").value,
                 top_k: Number($("test-topk").value) || null, limit: Number($("test-limit").value) || null,
                 rerank: $("test-rerank").checked, generate: $("test-generate").checked, include_hits: true };
  if (filters.length) body.filters = filters;
  $("test-hits").textContent = t("loading"); $("test-answer").textContent = ""; $("test-timings").textContent = "";
  try { renderHits(await api("POST", "/v1/query", body)); }
  catch (e) { $("test-hits").textContent = ""; $("test-hits").appendChild(el("p", "error", e.message)); }
});
function renderHits(data) {
  const box = $("test-hits");
  box.innerHTML = "";
  const timings = Object.entries(data.timings || {}).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${(v * 1000).toFixed(1)} ms`);
  $("test-timings").textContent = `${(data.hits || []).length} ${t("hits")} · ${timings.join(" · ")}` +
    (data.rerank_enabled ? "" : ` · ${t("rerankOff")}`);
  if (data.answer && $("test-generate").checked) {
    const a = el("div", "hit"); a.appendChild(el("div", "meta", data.refused ? "refused" : "answer"));
    a.appendChild(el("div", "text", data.answer_with_citations || data.answer)); $("test-answer").appendChild(a);
  }
  if (!(data.hits || []).length) { box.appendChild(el("p", "muted", t("noHits"))); return; }
  data.hits.forEach((h, i) => {
    const card = el("div", "hit");
    const head = el("div");
    head.appendChild(el("span", "rank", `${i + 1}`));
    head.appendChild(document.createTextNode(`${h.title || h.document}`));
    const where = [h.document, (h.section_path || []).join(" > "), h.page !== null && h.page !== undefined ? `${t("page")} ${h.page}` : "",
                   h.end > h.start ? `${t("span")} ${h.start}–${h.end}` : ""].filter(Boolean).join(" · ");  // added by hand: no span
    const scores = `${t("fused")} ${h.score.toFixed(4)}` + (h.rerank_score !== null && h.rerank_score !== undefined ? ` · ${t("rerankScore")} ${h.rerank_score.toFixed(3)}` : "");
    card.append(head, el("div", "meta", `${where} · ${scores}`));
    const prov = (h.provenance || []).map((p) => `${p.list}${p.variant && p.variant !== "original" ? ` (${p.variant})` : ""} #${p.rank} (${Number(p.score).toFixed(3)})`);
    card.appendChild(el("div", "prov", prov.join(" · ")));
    card.appendChild(el("div", "text", h.text));
    box.appendChild(card);
  });
}

// API keys (admin only) -----------------------------------------------------------------------------
// the first-run states said in words: no key entered, a key that is not the admin key (and whether
// the server has an admin key at all), authentication off
function keysState(error) {
  const box = $("keys-state"), s = state.system && state.system.settings;
  const authOff = !!(s && s.auth_disabled), adminSet = !!(s && s.api_admin_key);
  let text = "";
  if (error && error.status === 401) text = t("keysNeedAdmin");
  else if (error && error.status === 403) text = s && !adminSet ? t("keysNoAdmin") : t("keysNotAdmin");
  else if (error) text = error.message;
  else if (authOff) text = t("keysAuthOff");
  box.textContent = text; box.hidden = !text;
  $("create-key").hidden = !!error;
}
async function loadKeys() {
  if (!state.system) { try { state.system = await api("GET", "/v1/system"); } catch (e) { state.system = null; } }
  const body = $("keys-table").tBodies[0];
  body.innerHTML = "";
  $("key-kbs").textContent = state.kbs && state.kbs.length ? t("keyKbs", state.kbs.map((k) => k.name).join(", ")) : "";
  let keys;
  try { keys = await api("GET", "/v1/keys"); keysState(null); }
  catch (e) { keysState(e); $("keys-table").hidden = true; return; }
  $("keys-table").hidden = false;
  if (!keys.length) { const td = body.insertRow().insertCell(); td.colSpan = 7; td.textContent = t("noKeys"); }
  for (const k of keys) {
    const tr = body.insertRow();
    [k.name, k.id, `${k.prefix}…`, k.read.join(", "), k.write.join(", "), fmtTime(k.created_at)].forEach((v) => { tr.insertCell().textContent = v; });
    const revoke = el("button", "danger", t("revoke"));
    revoke.type = "button"; revoke.setAttribute("aria-label", `${t("revoke")} ${k.name}`);
    revoke.addEventListener("click", async () => {
      if (!confirm(t("confirmRevoke", k.name))) return;
      try { await api("DELETE", `/v1/keys/${enc(k.id)}`); say(`${k.name}: ${t("revoked")}`); await loadKeys(); }
      catch (e) { $("key-error").textContent = e.message; }
    });
    tr.insertCell().appendChild(revoke);
  }
}
const kbList = (text) => text.split(/[,，\s]+/).map((x) => x.trim()).filter(Boolean);
$("create-key").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("key-error").textContent = "";
  const body = { name: $("new-key-name").value.trim(), read: kbList($("new-key-read").value), write: kbList($("new-key-write").value) };
  try {
    const created = await api("POST", "/v1/keys", body);
    $("key-secret-value").textContent = created.key;  // shown this once; never stored by the page
    $("key-secret").hidden = false;
    $("new-key-name").value = ""; $("new-key-read").value = ""; $("new-key-write").value = "";
    await loadKeys();
  } catch (e) {
    $("key-error").textContent = e.message;
    ({ name: $("new-key-name"), read: $("new-key-read"), write: $("new-key-write") }[e.field] || $("new-key-name")).focus();
  }
});
$("key-secret-done").addEventListener("click", () => { $("key-secret-value").textContent = ""; $("key-secret").hidden = true; });

// settings ----------------------------------------------------------------------------------------
async function loadSystem() {
  try {
    state.system = await api("GET", "/v1/system");
    const s = state.system, body = $("system-table").tBodies[0];
    body.innerHTML = "";
    const rows = [["embedding model", `${s.embedder.name || "-"} — ${s.embedder.reason}`],
                  ["reranker", s.reranker.enabled ? s.reranker.name : `off: ${s.reranker.reason}`],
                  ["LLM", s.llm.embedded ? `embedded${s.llm.name ? ": " + s.llm.name : ""}` : `${s.llm.endpoint} (${s.llm.model})`],
                  ["vector store", s.vector_backend], ["lexical index", s.lexical_backend], ["models loaded", String(s.ready)]];
    for (const [k, v] of rows) { const tr = body.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v; }
    $("settings-json").textContent = JSON.stringify(s.settings, null, 2);
  } catch (e) { state.system = null; say(e.message, true); }
  renderRerank();
}

async function reloadAll() {
  await loadKbs(); await loadSystem(); loadDocs();
  if ($("tab-keys").getAttribute("aria-selected") === "true") loadKeys();
}
applyLanguage();
reloadAll();
