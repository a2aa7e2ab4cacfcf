"use strict";
// knowledge-base settings, re-parse, URL import, jobs with retry, usage: the parts of the console over
// /v1/kbs/{kb}/settings, /documents/reparse, /documents/url, /v1/jobs and /v1/kbs/{kb}/usage.
// Uses console.js's helpers ($, api, el, t, state, currentKb, enc, pollJob, loadDocs, parseTags, tagText).
Object.assign(EN, {
  staleDocs: "{0} document(s) were chunked before the last chunking change: re-parse them to apply it (their chunks are embedded again with the same model; no re-embedding with another model).",
  saved: "Saved.", model: "Embedding model (read-only): {0} ({1} dimensions)", serverValue: "server: {0}",
  reparseQueued: "re-parse of {0} document(s) queued", reparseDone: "re-parse of {0} document(s): {1}", reparseErrors: "not re-parsed: {0}", confirmReparseAll: "Re-parse every uploaded document of “{0}” with its current settings?",
  reembedNeeded: "Re-embedding needed: this knowledge base was built with {0} ({1} dimensions), the server embeds with {2} ({3} dimensions). It cannot be searched or written until it is re-embedded.",
  reembedNow: "Re-embed now", confirmReembed: "Re-embed every chunk of “{0}” with {1}? Queries keep using the old vectors until it has finished.",
  reembedQueued: "re-embedding queued", reembedRunning: "Re-embedding", reembedFinished: "Re-embedding finished", reembedDone: "re-embedding: {0}", reembedProgress: "{0}/{1} chunks embedded",
  reembedSummary: "{0} chunks re-embedded with {1} ({2} dimensions)", reembedPill: "re-embed", reembedPillTitle: "Built with another embedding model than the server's: re-embed it from its settings",
});
Object.assign(I18N.zh, {
  kbSettings: "入库设置", chunker: "分块方式", chunkSize: "分块大小", chunkOverlap: "重叠", ocr: "扫描页 OCR", newFileTags: "新文件的标签",
  reparseAll: "重新解析全部文档", bulkReparse: "重新解析所选", reparseSize: "分块大小",
  staleDocs: "{0} 个文档是在上次修改分块设置之前分块的：重新解析后生效（用同一模型重新嵌入分块，无需更换模型）。",
  saved: "已保存。", model: "嵌入模型（只读）：{0}（{1} 维）", serverValue: "服务器：{0}",
  reparseQueued: "已排队重新解析 {0} 个文档", reparseDone: "重新解析 {0} 个文档：{1}", reparseErrors: "未能重新解析：{0}", confirmReparseAll: "用当前设置重新解析 “{0}” 中所有上传的文档吗？",
  reembedNeeded: "需要重新嵌入：此知识库用 {0}（{1} 维）构建，服务器使用 {2}（{3} 维）。重新嵌入之前无法检索或写入。",
  reembedNow: "立即重新嵌入", confirmReembed: "用 {1} 重新嵌入 “{0}” 的全部分块吗？完成之前查询仍使用旧向量。",
  reembedQueued: "已排队重新嵌入", reembedRunning: "正在重新嵌入", reembedFinished: "重新嵌入完成", reembedDone: "重新嵌入：{0}", reembedProgress: "已嵌入 {0}/{1} 个分块",
  reembedSummary: "已用 {1}（{2} 维）重新嵌入 {0} 个分块", reembedPill: "需重新嵌入", reembedPillTitle: "用与服务器不同的嵌入模型构建：在其设置中重新嵌入",
});

// settings ----------------------------------------------------------------------------------------
async function loadKbSettings() {
  const kb = currentKb();
  $("kb-settings").hidden = !kb;
  if (!kb) return;
  $("kbs-error").textContent = "";
  try { showKbSettings(await api("GET", `/v1/kbs/${enc(kb)}/settings`)); }
  catch (e) { $("kbs-error").textContent = e.message; }
}
function showKbSettings(s) {
  $("kbs-kb").textContent = `→ ${s.kb}`;
  $("kbs-chunker").value = s.chunker; $("kbs-size").value = s.chunk_size; $("kbs-overlap").value = s.chunk_overlap;
  $("kbs-ocr").checked = s.ocr; $("kbs-tags").value = tagText(s.tags);
  for (const [id, f] of [["kbs-chunker", "chunker"], ["kbs-size", "chunk_size"], ["kbs-overlap", "chunk_overlap"], ["kbs-ocr", "ocr"]]) {
    $(id).title = s.own.includes(f) ? "" : t("serverValue", s.server[f]);
  }
  $("kbs-model").textContent = t("model", s.embed_model, s.dim);
  $("bulk-size").placeholder = s.chunk_size;
  $("kbs-msg").textContent = s.reparse_needed ? t("staleDocs", s.stale_documents) : s.message || "";
  $("kbs-msg").className = s.reparse_needed ? "notice" : "muted";
  $("kbs-reparse-row").hidden = !s.reparse_needed;
  $("kbs-reembed").hidden = !s.reembed_needed;
  $("kbs-reembed-msg").textContent = s.reembed_needed ? t("reembedNeeded", s.embed_model, s.dim, s.server_embed_model, s.server_dim ?? "?") : "";
  state.serverModel = s.server_embed_model;
}
$("kb-settings").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("kbs-error").textContent = "";
  try {
    const body = { chunker: $("kbs-chunker").value, chunk_size: Number($("kbs-size").value),
                   chunk_overlap: Number($("kbs-overlap").value), ocr: $("kbs-ocr").checked, tags: parseTags($("kbs-tags").value) };
    const s = await api("PATCH", `/v1/kbs/${enc(currentKb())}/settings`, body);
    showKbSettings(s);
    if (!s.reparse_needed) $("kbs-msg").textContent = t("saved") + (s.message ? ` ${s.message}` : "");
  } catch (e) {
    $("kbs-error").textContent = e.message;
    const input = { chunker: "kbs-chunker", chunk_size: "kbs-size", chunk_overlap: "kbs-overlap", ocr: "kbs-ocr", tags: "kbs-tags" }[e.field];
    if (input) $(input).focus();
  }
});
async function reparse(body) {
  const r = await api("POST", `/v1/kbs/${enc(currentKb())}/documents/reparse`, body);
  const errors = r.errors.map((x) => x.message).join("; ");
  const text = t("reparseQueued", r.documents.length) + (errors ? ` · ${t("reparseErrors", errors)}` : "");
  if (!r.job_id) { await loadKbSettings(); return text; }
  $("job").hidden = false; $("job-summary").textContent = text;
  const job = await pollJob(r.job_id);
  await loadKbSettings(); loadJobs();
  return t("reparseDone", r.documents.length, job.status) + (errors ? ` · ${t("reparseErrors", errors)}` : "");
}
$("kbs-reparse").addEventListener("click", async () => {
  if (!confirm(t("confirmReparseAll", currentKb()))) return;
  try { $("kbs-msg").textContent = await reparse({ all: true }); } catch (e) { $("kbs-error").textContent = e.message; }
});
// re-embedding with the server's model (POST /v1/kbs/{kb}/reindex): a job, shown in the job panel and the recent jobs
$("kbs-reembed-btn").addEventListener("click", async () => {
  const kb = currentKb();
  if (!confirm(t("confirmReembed", kb, state.serverModel))) return;
  $("kbs-error").textContent = "";
  $("kbs-reembed-btn").disabled = true;
  try {
    const r = await api("POST", `/v1/kbs/${enc(kb)}/reindex`);
    $("kbs-msg").textContent = t("reembedQueued"); $("kbs-msg").className = "muted";
    $("job").hidden = false; $("job-summary").textContent = r.message;
    loadJobs();
    const job = await pollJob(r.job_id);
    await loadKbSettings(); loadJobs();
    if (job.status === "succeeded" && state.chunksDoc && !$("doc-view").hidden) openDoc(state.chunksDoc);  // its 409 is gone
    $("kbs-msg").textContent = t("reembedDone", job.status) + (job.error ? ` · ${job.error}` : "");
    $("kbs-msg").className = job.status === "succeeded" ? "ok" : "error";
  } catch (e) { $("kbs-error").textContent = e.message; }
  finally { $("kbs-reembed-btn").disabled = false; }
});
$("bulk-reparse").addEventListener("click", async () => {
  $("bulk-result").textContent = ""; $("bulk-result").className = "muted";
  const size = Number($("bulk-size").value);
  const body = { doc_ids: [...state.picked] };
  if (size) body.settings = { chunk_size: size, chunk_overlap: Math.min(Number($("kbs-overlap").value) || 0, Math.floor(size / 5)) };
  try { state.picked = new Set(); $("bulk-result").textContent = await reparse(body); }
  catch (e) { $("bulk-result").textContent = e.message; $("bulk-result").className = "error"; }
});
$("kb").addEventListener("change", loadKbSettings);
$("tab-docs").addEventListener("click", loadKbSettings);
loadKbSettings();

// import from a URL: the server fetches one page into an ingest job (the upload's tags apply)
Object.assign(I18N.zh, { importUrl: "从网址导入", importButton: "导入" });
$("url-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("url-error").textContent = "";
  const url = $("url-input").value.trim();
  if (!url || !currentKb()) return;
  try {
    const tags = parseTags($("upload-tags").value);
    const accepted = await api("POST", `/v1/kbs/${enc(currentKb())}/documents/url`, { url, tags });
    $("url-input").value = "";
    $("job").hidden = false; $("job-summary").textContent = "";
    await pollJob(accepted.job_id);
    loadJobs();
  } catch (e) { $("url-error").textContent = e.message; $("url-input").focus(); }
});

// recent jobs of the knowledge base: failed files with their reasons, and a retry of them
Object.assign(EN, { retry: "Retry failed files", retried: "retry of {0}: {1}", noJobs: "No jobs yet.", notRetried: "not retried: {0}" });
Object.assign(I18N.zh, { jobsHeading: "最近的任务", kind: "类型", files: "文件", failures: "失败的文件及原因", pages: "页",
  retry: "重试失败的文件", retried: "{0} 的重试：{1}", noJobs: "还没有任务。", notRetried: "未重试：{0}" });
async function loadJobs() {
  const kb = currentKb(), body = $("jobs-table").tBodies[0];
  $("jobs-card").hidden = !kb;
  if (!kb) return;
  $("jobs-error").textContent = "";
  let jobs;
  try { jobs = await api("GET", `/v1/jobs?kb=${enc(kb)}&limit=10`); } catch (e) { $("jobs-error").textContent = e.message; return; }
  body.innerHTML = "";
  if (!jobs.length) { const td = body.insertRow().insertCell(); td.colSpan = 6; td.textContent = t("noJobs"); }
  for (const job of jobs) {
    const tr = body.insertRow();
    tr.insertCell().textContent = fmtTime(job.created_at);
    tr.insertCell().textContent = job.kind + (job.retry_of ? " ↻" : "");
    const st = tr.insertCell(); st.textContent = job.status;
    st.className = job.status === "failed" ? "error" : job.status === "succeeded" ? "ok" : "";
    const n = tr.insertCell(); n.className = "num";
    const reindex = job.kind === "reindex";  // no files: its chunks, and its error
    n.textContent = reindex ? t("reembedProgress", job.progress.chunks_done || 0, job.progress.chunks_known || 0)
      : `${job.files.length - job.errors.length}/${job.files.length}`;
    const why = tr.insertCell();
    for (const e of job.errors) why.appendChild(el("div", "error", `${e.file}: ${e.reason}`));
    if (reindex && job.error) why.appendChild(el("div", "error", job.error));
    const actions = tr.insertCell();
    if ((job.errors.length || reindex) && ["failed", "partial"].includes(job.status)) {
      const retry = el("button", "secondary", t("retry"));
      retry.type = "button"; retry.setAttribute("aria-label", `${t("retry")} ${job.id}`);
      retry.addEventListener("click", async () => {
        try {
          const r = await api("POST", `/v1/jobs/${enc(job.id)}/retry`);
          $("job").hidden = false;
          $("job-summary").textContent = r.not_retried.length ? t("notRetried", r.not_retried.map((x) => `${x.file}: ${x.reason}`).join("; ")) : "";
          await pollJob(r.job_id); loadJobs();
        } catch (e) { $("jobs-error").textContent = e.message; }
      });
      actions.appendChild(retry);
    }
  }
}
$("kb").addEventListener("change", loadJobs);
$("tab-docs").addEventListener("click", loadJobs);
loadJobs();

// usage: answers, refusals and cited documents per day; the most and never cited documents
Object.assign(EN, { usageTotals: "{0} questions, {1} refused ({2}%), over {3} days", noQuestions: "No question was answered from this knowledge base in this period.", removed: "(removed)", noneCited: "No answer cited a document in this period." });
Object.assign(I18N.zh, { tabUsage: "使用情况", usageHeading: "使用情况", period: "时间范围", perDay: "每天", day: "日期", questions: "提问",
  refusals: "拒答", citedDocs: "被引用文档", topCited: "引用最多的文档", answers: "回答数", neverCited: "这段时间从未被引用",
  usageTotals: "{3} 天内 {0} 个提问，拒答 {1} 个（{2}%）", noQuestions: "这段时间没有基于这个知识库的回答。", removed: "（已删除）", noneCited: "这段时间没有回答引用文档。" });
const NEVER_PAGE = 20;
let neverOffset = 0;
async function loadUsage() {
  const kb = currentKb();
  $("usage-kb").textContent = kb ? `→ ${kb}` : "";
  $("usage-error").textContent = "";
  if (!kb) return;
  const days = Number($("usage-days").value);
  let u;
  try { u = await api("GET", `/v1/kbs/${enc(kb)}/usage?days=${days}&limit=${NEVER_PAGE}&offset=${neverOffset}`); }
  catch (e) { $("usage-error").textContent = e.message; return; }
  $("usage-totals").textContent = u.questions ? t("usageTotals", u.questions, u.refusals, Math.round(100 * u.refusals / u.questions), days) : t("noQuestions");
  const body = $("usage-days-table").tBodies[0];
  body.innerHTML = "";
  const most = Math.max(1, ...u.days.map((d) => d.questions));
  for (const d of u.days.filter((x) => x.questions || days <= 7).reverse()) {
    const tr = body.insertRow();
    tr.insertCell().textContent = d.day;
    [d.questions, d.refusals, d.cited_documents].forEach((v) => { const c = tr.insertCell(); c.className = "num"; c.textContent = v; });
    const bar = el("div", "ubar"); bar.style.width = `${Math.round(100 * d.questions / most)}%`;
    const refused = el("div", "refused"); refused.style.width = d.questions ? `${Math.round(100 * d.refusals / d.questions)}%` : "0";
    bar.appendChild(refused); tr.insertCell().appendChild(bar);
  }
  const top = $("usage-top").tBodies[0];
  top.innerHTML = "";
  if (!u.top_cited.length) { const td = top.insertRow().insertCell(); td.colSpan = 2; td.className = "muted"; td.textContent = t("noneCited"); }
  for (const d of u.top_cited) {
    const tr = top.insertRow();
    tr.insertCell().textContent = d.source || `${d.doc_id} ${t("removed")}`;
    const c = tr.insertCell(); c.className = "num"; c.textContent = d.answers;
  }
  const never = $("usage-never");
  never.innerHTML = "";
  u.never_cited.forEach((d) => never.appendChild(el("li", null, d.source)));
  $("never-total").textContent = `(${u.never_cited_total})`;
  $("never-range").textContent = t("range", u.never_cited.length ? neverOffset + 1 : 0, neverOffset + u.never_cited.length, u.never_cited_total);
  $("never-prev").disabled = neverOffset === 0;
  $("never-next").disabled = neverOffset + u.never_cited.length >= u.never_cited_total;
}
$("usage-days").addEventListener("change", () => { neverOffset = 0; loadUsage(); });
$("never-prev").addEventListener("click", () => { neverOffset = Math.max(0, neverOffset - NEVER_PAGE); loadUsage(); });
$("never-next").addEventListener("click", () => { neverOffset += NEVER_PAGE; loadUsage(); });
$("kb").addEventListener("change", () => { neverOffset = 0; if ($("tab-usage").getAttribute("aria-selected") === "true") loadUsage(); });
