// localseek /ui: status polling, a throughput sparkline, and a streaming chat playground.
// Plain browser JavaScript, no dependencies: the page must work offline, with no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const POINTS = 60; // two minutes of throughput at one point per poll
const samples = [];
const WINDOW_S = 10;
const recent = []; // {t, tokens} of the polls in the last WINDOW_S seconds
let kind = "server";
const history = [];
let modelsLoaded = false;

function apiHeaders() {
  const key = $("api-key").value.trim();
  const h = { "Content-Type": "application/json" };
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function fmt(n, digits = 0) {
  return n === undefined || n === null ? "–" : Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

async function pollStatus() {
  try {
    const r = await fetch("/ui/status", { cache: "no-store", headers: apiHeaders() });
    if (r.status === 401) {
      $("health").textContent = "enter the API key";
      $("health").className = "pill bad";
    } else {
      renderStatus(await r.json());
    }
  } catch (e) {
    $("health").textContent = "unreachable";
    $("health").className = "pill bad";
  }
  setTimeout(pollStatus, POLL_MS);
}

function renderStatus(s) {
  kind = s.kind;
  $("kind").textContent = s.kind;
  $("health").textContent = s.healthy ? "healthy" : "degraded";
  $("health").className = "pill " + (s.healthy ? "ok" : "bad");
  $("models").textContent = (s.models || []).join(", ") || "–";
  const load = s.load || {};
  $("running").textContent = fmt(load.running);
  $("waiting").textContent = fmt(load.waiting);
  $("capacity").textContent = fmt(load.capacity);
  $("kv").textContent = load.kv_usage === undefined ? "n/a" : fmt(100 * load.kv_usage, 1) + " %";
  const totals = s.totals || {};
  $("generated").textContent = fmt(totals.generated_tokens);
  addSample(totals.generated_tokens);
  renderReplicas(s.replicas || []);
  renderErrors(s.errors || []);
  if (!modelsLoaded) loadModels(s.models || []);
}

function addSample(tokens) {
  // The rate over the last WINDOW_S seconds: a gateway counts an answer's tokens when it
  // ends, so a per-poll difference would be all spikes.
  if (tokens === undefined) return;
  const now = performance.now() / 1000;
  recent.push({ t: now, tokens });
  while (recent.length > 2 && now - recent[1].t >= WINDOW_S) recent.shift();
  if (recent.length < 2) return;
  const first = recent[0];
  const rate = Math.max(0, (tokens - first.tokens) / Math.max(1e-3, now - first.t));
  samples.push(rate);
  if (samples.length > POINTS) samples.shift();
  $("tps").textContent = fmt(rate, 1) + " tok/s";
  drawThroughput();
}

function drawThroughput() {
  const c = $("throughput");
  const ctx = c.getContext("2d");
  const w = c.width, h = c.height;
  ctx.clearRect(0, 0, w, h);
  const top = Math.max(1, ...samples);
  ctx.fillStyle = "#6b7685";
  ctx.font = "10px sans-serif";
  ctx.fillText(fmt(top, 1) + " tok/s", 4, 11);
  ctx.beginPath();
  samples.forEach((v, i) => {
    const x = (i / (POINTS - 1)) * w;
    const y = h - 2 - (v / top) * (h - 16);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.strokeStyle = "#2f6fdf";
  ctx.lineWidth = 2;
  ctx.stroke();
}

function renderReplicas(replicas) {
  const body = $("replicas").tBodies[0];
  body.replaceChildren(...replicas.map((r) => {
    const tr = document.createElement("tr");
    const ok = r.state === "ok";
    for (const [v, cls] of [[r.name], [r.kind], [r.state, ok ? "state-ok" : "state-bad"], [fmt(r.in_flight)], [fmt(r.capacity)]]) {
      const td = document.createElement("td");
      td.textContent = v;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function renderErrors(errors) {
  const ul = $("errors");
  if (!errors.length) { ul.innerHTML = '<li class="muted">none</li>'; return; }
  ul.replaceChildren(...errors.map((e) => {
    const li = document.createElement("li");
    const t = new Date(e.at * 1000).toLocaleTimeString();
    li.textContent = `${t} ${e.status} ${e.method} ${e.path}: ${e.message}`;
    return li;
  }));
}

async function loadModels(fallback) {
  // A gateway whose upstreams list no models serves any id: the field then takes free text.
  modelsLoaded = true;
  let ids = fallback;
  try {
    const r = await fetch("/v1/models", { headers: apiHeaders() });
    if (r.ok) ids = (await r.json()).data.map((m) => m.id);
  } catch (e) { /* keep the status page's list */ }
  $("model-list").replaceChildren(...ids.map((id) => new Option(id, id)));
  if (!$("model").value && ids.length) $("model").value = ids[0];
}

function bubble(role) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  if (role === "assistant") {
    div.innerHTML = '<div class="reasoning-label"></div><div class="reasoning"></div><div class="content"></div><div class="usage"></div>';
  }
  $("conversation").appendChild(div);
  return div;
}

async function send(ev) {
  ev.preventDefault();
  const text = $("message").value.trim();
  if (!text) return;
  $("message").value = "";
  bubble("user").textContent = text;
  history.push({ role: "user", content: text });
  const out = bubble("assistant");
  $("send").disabled = true;
  $("chat-state").textContent = "waiting…";
  const started = performance.now();
  const result = { content: "", reasoning: "", usage: null, firstTokenAt: null, cache: null };
  try {
    await streamChat(out, result, started);
    history.push({ role: "assistant", content: result.content });
    out.querySelector(".usage").textContent = usageLine(result, started);
    $("chat-state").textContent = "";
  } catch (e) {
    out.querySelector(".content").textContent = "Error: " + e.message;
    out.classList.add("state-bad");
    $("chat-state").textContent = "";
    history.pop();
  } finally {
    out.dataset.done = "true";
    $("send").disabled = false;
  }
}

async function streamChat(out, result, started) {
  const body = {
    model: $("model").value,
    messages: history,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number($("max-tokens").value) || 256,
    temperature: Number($("temperature").value),
  };
  const r = await fetch("/v1/chat/completions", { method: "POST", headers: apiHeaders(), body: JSON.stringify(body) });
  result.cache = r.headers.get("x-localseek-cache");
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  $("chat-state").textContent = "streaming…";
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data:")) onData(line.slice(5).trim(), out, result, started);
      }
    }
  }
}

function onData(data, out, result, started) {
  if (!data || data === "[DONE]") return;
  const chunk = JSON.parse(data);
  if (chunk.error) throw new Error(chunk.error.message);
  if (chunk.usage) result.usage = chunk.usage;
  out.dataset.chunks = String(Number(out.dataset.chunks || 0) + 1);
  for (const choice of chunk.choices || []) {
    const d = choice.delta || {};
    if ((d.content || d.reasoning_content) && result.firstTokenAt === null) result.firstTokenAt = performance.now();
    if (d.reasoning_content) {
      result.reasoning += d.reasoning_content;
      out.querySelector(".reasoning-label").textContent = "reasoning";
      out.querySelector(".reasoning").textContent = result.reasoning;
    }
    if (d.content) {
      result.content += d.content;
      out.querySelector(".content").textContent = result.content;
    }
  }
  $("conversation").scrollTop = $("conversation").scrollHeight;
}

function usageLine(result, started) {
  const parts = [];
  const u = result.usage;
  if (u) {
    parts.push(`prompt ${u.prompt_tokens} tok`, `completion ${u.completion_tokens} tok`);
    const cached = (u.prompt_tokens_details || {}).cached_tokens;
    if (cached !== undefined) parts.push(`prefix cache ${cached} tok`);
  }
  if (result.firstTokenAt !== null) {
    parts.push(`first token ${((result.firstTokenAt - started) / 1000).toFixed(2)} s`);
    const secs = (performance.now() - result.firstTokenAt) / 1000;
    if (u && u.completion_tokens > 1 && secs > 0) parts.push(`${((u.completion_tokens - 1) / secs).toFixed(1)} tok/s`);
  }
  if (kind === "gateway") parts.push("response cache " + (result.cache === "hit" ? "hit" : "miss"));
  return parts.join(" · ");
}

$("chat-form").addEventListener("submit", send);
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) send(e);
});
$("clear").addEventListener("click", () => { history.length = 0; $("conversation").replaceChildren(); });
$("api-key").value = localStorage.getItem("localseek-api-key") || "";
$("api-key").addEventListener("change", () => localStorage.setItem("localseek-api-key", $("api-key").value));
pollStatus();
