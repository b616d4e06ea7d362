// specialist studio: the live loss chart (server-sent events) and the streamed chat.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  liveTraining();
  chat();
});

// ---------------------------------------------------------------- training
function liveTraining() {
  const live = document.getElementById("live");
  const target = document.getElementById("loss-chart");
  if (!live || !target) return;
  const run = live.dataset.run;
  const data = [[], [], []];  // step, loss, eval loss
  const chart = new uPlot({
    width: target.clientWidth || 600, height: 300,
    scales: { x: { time: false } },
    axes: [{ label: "step" }, { label: "loss" }],
    series: [{ label: "step" },
             { label: "train loss", stroke: "#2457c5", width: 2, spanGaps: true },
             { label: "eval loss", stroke: "#d2691e", width: 2, spanGaps: true, points: { show: true, size: 6 } }],
  }, data, target);
  new ResizeObserver(() => chart.setSize({ width: target.clientWidth, height: 300 })).observe(target);
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  const source = new EventSource(`/train/${encodeURIComponent(run)}/events`);
  source.addEventListener("reset", () => { data.forEach((s) => s.length = 0); chart.setData(data); });
  source.addEventListener("metric", (e) => {
    const m = JSON.parse(e.data);
    if (m.loss === undefined && m.eval_loss === undefined) return;
    const i = data[0].length && data[0][data[0].length - 1] === m.step ? data[0].length - 1 : data[0].length;
    data[0][i] = m.step;
    data[1][i] = m.loss ?? data[1][i] ?? null;
    data[2][i] = m.eval_loss ?? data[2][i] ?? null;
    chart.setData(data);
    target.dataset.points = String(data[0].length);
  });
  source.addEventListener("status", (e) => show(JSON.parse(e.data)));
  source.addEventListener("end", (e) => {
    source.close();
    const s = JSON.parse(e.data);
    show(s);
    if (live.dataset.status === "running" && s.status !== "running") location.reload();  // buttons and summary
  });
  function show(s) {
    set("m-step", s.max_steps ? `${s.step}/${s.max_steps}` : String(s.step));
    set("m-loss", s.loss == null ? "–" : s.loss.toFixed(4));
    set("m-eval", s.eval_loss == null ? "–" : s.eval_loss.toFixed(4));
    set("m-tps", s.tokens_per_second == null ? "–" : s.tokens_per_second.toFixed(0));
    set("m-eta", s.status === "running" ? s.eta : "–");
    const status = document.getElementById("run-status");
    if (status) { status.textContent = s.status; status.className = `badge ${s.status}`; }
    const bar = document.getElementById("m-progress");
    if (bar && s.percent != null) bar.value = s.percent;
    const err = document.getElementById("run-error");
    if (err && s.error) { err.textContent = `error: ${s.error}`; err.hidden = false; }
  }
}

// ---------------------------------------------------------------- chat
function chat() {
  const form = document.getElementById("chat-form");
  if (!form) return;
  const arena = document.getElementById("arena");
  const columns = document.getElementById("columns");
  const prompt = document.getElementById("prompt");
  const stop = document.getElementById("stop-chat");
  const send = document.getElementById("send");
  const histories = { a: [], b: [] };
  let controllers = [];

  const layout = () => {
    form.classList.toggle("arena-on", arena.checked);
    columns.classList.toggle("arena", arena.checked);
  };
  arena.addEventListener("change", layout);
  layout();
  for (const side of ["a", "b"]) {
    document.getElementById(`model-${side}`).addEventListener("change", (e) => {
      document.getElementById(`title-${side}`).textContent = e.target.value;
      histories[side] = [];
      document.getElementById(`chat-${side}`).replaceChildren();
    });
  }
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  document.getElementById("reset-chat").addEventListener("click", () => {
    histories.a = []; histories.b = [];
    document.getElementById("chat-a").replaceChildren();
    document.getElementById("chat-b").replaceChildren();
    prompt.focus();
  });
  stop.addEventListener("click", () => controllers.forEach((c) => c.abort()));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = prompt.value.trim();
    if (!text) return;
    prompt.value = "";
    const sides = arena.checked ? ["a", "b"] : ["a"];
    controllers = sides.map(() => new AbortController());
    send.disabled = true; stop.disabled = false;
    await Promise.all(sides.map((side, i) => ask(side, text, controllers[i])));
    send.disabled = false; stop.disabled = true;
    prompt.focus();
  });

  async function ask(side, text, controller) {
    const log = document.getElementById(`chat-${side}`);
    const user = el("div", "msg user", text);
    const answer = el("div", "msg assistant streaming", "");
    const body = el("span", "body", "");
    answer.append(body);
    log.append(user, answer);
    const request = {
      model: document.getElementById(`model-${side}`).value,
      prompt: text,
      system: document.getElementById("system").value,
      history: histories[side],
      max_new_tokens: Number(document.getElementById("max-tokens").value) || 256,
      temperature: Number(document.getElementById("temperature").value) || 0,
    };
    let full = "", failed = false;
    try {
      const response = await fetch("/chat/stream", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request), signal: controller.signal,
      });
      if (!response.ok) throw new Error((await response.text()).split("\n")[0]);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const kind = (block.match(/^event: (.*)$/m) || [])[1];
          const data = JSON.parse((block.match(/^data: (.*)$/m) || [, "{}"])[1]);
          if (kind === "piece") { full += data.text; body.textContent = full; log.scrollTop = log.scrollHeight; }
          else if (kind === "passages") answer.append(el("span", "meta", "passages: " + (data.passages.map((p) => p.id).join(", ") || "none")));
          else if (kind === "done") answer.append(el("span", "meta", `${data.completion_tokens} tokens in ${data.seconds} s`));
          else if (kind === "error") { failed = true; answer.append(el("p", "error", `error: ${data.message}`)); }
        }
      }
    } catch (err) {
      failed = true;
      answer.append(el("p", err.name === "AbortError" ? "meta" : "error",
                       err.name === "AbortError" ? "(stopped; not kept in the conversation)" : `error: ${err.message}`));
    }
    answer.classList.remove("streaming");
    answer.dataset.done = "1";
    if (!failed && full.trim()) histories[side].push({ role: "user", content: text }, { role: "assistant", content: full.trim() });
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    node.className = cls;
    node.textContent = text;
    return node;
  }
}
