"use strict";
const $ = (id) => document.getElementById(id);
const state = { conversationId: null, busy: false };
$("key").value = localStorage.getItem("rag-api-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("rag-api-key", $("key").value.trim()); loadKbs(); loadRerank(); });

// the rerank box reflects the server: unchecked and disabled when no reranker model is loaded
async function loadRerank() {
  try {
    const r = await fetch("/v1/system", { headers: headers(false) });
    if (!r.ok) return;
    const rerank = (await r.json()).reranker || {};
    $("rerank").checked = !!rerank.enabled;
    $("rerank").disabled = !rerank.enabled;
    $("rerank-text").textContent = rerank.enabled ? "rerank" : "reranking: off (no model)";
  } catch (e) { /* keep the default box */ }
}

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = $("key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

// first run: without a (valid) key every call answers 401/403; the page says how to make a key
function showKeyHelp(status, body) {
  const help = $("key-help");
  help.hidden = status !== 401 && status !== 403;
  if (help.hidden) return;
  const message = (body && body.error && body.error.message) || "";
  $("key-help-reason").textContent = (status === 401 ? "An API key is needed (401)" :
    "This API key may not list the knowledge bases (403)") + (message ? ": " + message : ".");
}

async function loadKbs() {
  try {
    const r = await fetch("/v1/kbs", { headers: headers(false) });
    showKeyHelp(r.status, r.ok ? null : await r.json().catch(() => null));
    if (!r.ok) return;
    const select = $("kb"), saved = localStorage.getItem("rag-kb") || "";
    select.innerHTML = '<option value="">default</option>';
    for (const kb of await r.json()) {
      const o = document.createElement("option");
      o.value = kb.name; o.textContent = `${kb.name} (${kb.documents} docs)`;
      select.appendChild(o);
    }
    select.value = [...select.options].some((o) => o.value === saved) ? saved : "";
  } catch (e) { /* the page still works with the default knowledge base */ }
}
$("kb").addEventListener("change", () => { localStorage.setItem("rag-kb", $("kb").value); newChat(); });

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function addMessage(role, text) {
  $("empty")?.remove();
  const box = el("div", "msg " + role);
  box.appendChild(el("div", "who", role === "user" ? "You" : "Assistant"));
  const body = el("div", "text", text || "");
  box.appendChild(body);
  $("log").appendChild(box);
  box.scrollIntoView({ block: "end" });
  return { box, body };
}

// the answer text with every [n] / [1, 2] marker turned into links to the numbered sources
function renderAnswer(target, text, box) {
  target.textContent = "";
  const re = /\[(\d+(?:\s*[,，]\s*\d+)*)\]/g;
  let last = 0, m;
  while ((m = re.exec(text)) !== null) {
    target.appendChild(document.createTextNode(text.slice(last, m.index)));
    target.appendChild(document.createTextNode("["));
    m[1].split(/\s*[,，]\s*/).forEach((n, i) => {
      if (i) target.appendChild(document.createTextNode(", "));
      const a = el("a", "cite", n);
      a.href = "#"; a.dataset.source = n; a.title = "Show source " + n;
      a.addEventListener("click", (ev) => { ev.preventDefault(); showSource(box, n); });
      target.appendChild(a);
    });
    target.appendChild(document.createTextNode("]"));
    last = m.index + m[0].length;
  }
  target.appendChild(document.createTextNode(text.slice(last)));
}

function showSource(box, n) {
  const item = box.querySelector(`.source[data-number="${n}"]`);
  if (!item) return;
  box.querySelectorAll(".source.highlight").forEach((s) => s.classList.remove("highlight"));
  item.classList.add("open", "highlight");
  item.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function renderSources(box, sources) {
  box.querySelector(".sources")?.remove();
  if (!sources || !sources.length) return;
  const wrap = el("div", "sources");
  wrap.appendChild(el("h3", "", "Sources"));
  for (const s of sources) {
    const item = el("div", "source" + (s.cited ? " cited" : ""));
    item.dataset.number = s.number;
    const head = el("div", "head");
    head.appendChild(el("span", "num", `[${s.number}]`));
    head.appendChild(el("span", "", s.title || s.document));
    const where = [s.document, s.section, s.page ? "p. " + s.page : ""].filter(Boolean).join(" · ");
    head.appendChild(el("div", "meta", where + (s.cited ? " · cited" : "")));
    item.appendChild(head);
    item.appendChild(el("div", "body", s.text || s.snippet || ""));
    item.addEventListener("click", () => item.classList.toggle("open"));
    wrap.appendChild(item);
  }
  box.appendChild(wrap);
}

// Server-Sent Events over fetch (EventSource cannot POST): yields {event, data} objects
async function* readEvents(response) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

// why an answer was refused (info.refusal_reason), in the words of the status line
const REFUSALS = {
  no_hits: "nothing matched", low_rerank_score: "no source scored as relevant",
  model_refused: "the model found no answer", empty_model_answer: "the model returned nothing",
  unsupported_answer: "no source supports what the model wrote",
  off_topic_answer: "the answer did not address the question",
  off_topic_sources: "no source found is about the question",
};
function refusalNote(info) {
  const why = info && REFUSALS[info.refusal_reason];
  return why ? `: ${why}` : "";
}

async function ask(question) {
  state.busy = true; $("send").disabled = true;
  addMessage("user", question);
  const { box, body } = addMessage("assistant", "");
  const status = el("div", "status", "searching…");
  box.appendChild(status);
  let text = "";
  const payload = { message: question, stream: true, conversation_id: state.conversationId };
  if ($("kb").value) payload.kb = $("kb").value;
  if (!$("rerank").checked) payload.rerank = false;
  try {
    const r = await fetch("/v1/chat", { method: "POST", headers: headers(true), body: JSON.stringify(payload) });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || `HTTP ${r.status}`);
    }
    for await (const { event, data } of readEvents(r)) {
      if (event === "conversation") state.conversationId = data.conversation_id;
      else if (event === "retrieval") { status.textContent = `${data.sources.length} sources found · writing…`; renderSources(box, data.sources); }
      else if (event === "token") { text += data.text; renderAnswer(body, text, box); }
      else if (event === "sources") renderSources(box, data.sources);
      else if (event === "done") {
        // final text: markers added where the verifier attributed an uncited claim to its source
        renderAnswer(body, data.answer.answer_with_citations || data.answer.answer, box);
        const t = data.timings || {};
        status.textContent = (data.answer.refused ? `no answer in the documents${refusalNote(data.answer.info)} · ` : "") + (t.total ? `${t.total.toFixed(2)} s` : "");
      } else if (event === "error") throw new Error(data.message || data.code);
    }
  } catch (e) {
    box.classList.add("error");
    body.textContent = (text ? text + "\n\n" : "") + "Error: " + e.message;
    status.textContent = "";
  } finally {
    state.busy = false; $("send").disabled = false; box.scrollIntoView({ block: "end" });
  }
}

function newChat() {
  state.conversationId = null;
  $("log").innerHTML = "";
  $("log").appendChild(el("p", "empty", "New conversation. Ask a question about your documents."));
  $("log").firstChild.id = "empty";
}
$("new").addEventListener("click", newChat);
$("ask").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("question").value.trim();
  if (!q || state.busy) return;
  $("question").value = "";
  ask(q);
});
$("question").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask").requestSubmit(); }
});
// links like /?kb=manuals&q=How+long+is+the+warranty%3F open the page and ask at once
(async () => {
  const params = new URLSearchParams(location.search);
  if (params.get("kb")) localStorage.setItem("rag-kb", params.get("kb"));
  await loadKbs();
  loadRerank();
  if (params.get("kb") && !$("kb").value) {
    const o = el("option", "", params.get("kb")); o.value = params.get("kb"); $("kb").appendChild(o); $("kb").value = o.value;
  }
  if (params.get("q")) ask(params.get("q"));
})();
