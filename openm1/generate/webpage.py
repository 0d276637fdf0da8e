"""The chat page served at ``/``: one static HTML file with plain JavaScript, no build step.

It posts the conversation to ``/v1/chat/completions`` with ``stream: true``, appends the answer as the
server-sent events arrive, and shows the reasoning in a ``<details>`` block that folds once the answer
proper starts.
"""

from __future__ import annotations

import html

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>openm1 chat: __MODEL__</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 0 auto; padding: 1rem; }
  #log { display: flex; flex-direction: column; gap: .6rem; margin-bottom: 1rem; }
  .msg { padding: .5rem .8rem; border-radius: .5rem; white-space: pre-wrap; word-wrap: break-word; }
  .user { background: #e8f0fe; align-self: flex-end; }
  .assistant { background: #f3f3f3; }
  details.reasoning { color: #555; font-size: .9em; margin-bottom: .4rem; }
  .meta { color: #888; font-size: .8em; }
  form { display: flex; gap: .5rem; }
  textarea { flex: 1; min-height: 3rem; font: inherit; }
  .error { background: #fde8e8; }
</style>
</head>
<body>
<h1>openm1 <small class="meta">__MODEL__</small></h1>
<div id="log"></div>
<form id="form">
  <textarea id="input" placeholder="Ask something (Enter sends, Shift+Enter breaks the line)"></textarea>
  <button id="send" type="submit">Send</button>
</form>
<p class="meta">max tokens <input id="max" type="number" value="256" min="1" style="width:5rem">
temperature <input id="temp" type="number" value="0.7" step="0.1" min="0" max="2" style="width:4rem"></p>
<script>
const MODEL = __MODEL_JSON__;
const history = [];
const log = document.getElementById("log");
const input = document.getElementById("input");

function bubble(role) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  log.appendChild(div);
  return div;
}

input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    document.getElementById("form").requestSubmit();
  }
});

document.getElementById("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  bubble("user").textContent = text;
  history.push({role: "user", content: text});
  const box = bubble("assistant");
  const details = document.createElement("details");
  details.className = "reasoning"; details.open = true; details.hidden = true;
  details.innerHTML = "<summary>Reasoning</summary><div class='think'></div>";
  const answer = document.createElement("div"); answer.className = "answer";
  const meta = document.createElement("div"); meta.className = "meta";
  box.append(details, answer, meta);
  const think = details.querySelector(".think");
  let content = "", reasoning = "";
  const t0 = performance.now();
  document.getElementById("send").disabled = true;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({model: MODEL, messages: history, stream: true,
        max_tokens: Number(document.getElementById("max").value),
        temperature: Number(document.getElementById("temp").value)})});
    if (!resp.ok) {
      const err = await resp.json();
      throw new Error(err.error ? err.error.message : resp.statusText);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", finish = null;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
        const line = buffer.slice(0, cut).trim(); buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const choice = JSON.parse(data).choices[0];
        if (!choice) continue;
        const d = choice.delta || {};
        if (d.reasoning_content) {
          reasoning += d.reasoning_content;
          details.hidden = false;
          think.textContent = reasoning;
        }
        if (d.content) {
          content += d.content;
          answer.textContent = content;
          if (reasoning) details.open = false;  // fold the reasoning once the answer starts
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    if (reasoning) details.open = false;
    const secs = (performance.now() - t0) / 1000;
    meta.textContent = `${finish || "?"} · ${secs.toFixed(1)} s`;
    history.push({role: "assistant", content: content});
  } catch (err) {
    box.classList.add("error"); answer.textContent = "Error: " + err.message;
    history.pop();
  } finally {
    document.getElementById("send").disabled = false;
  }
});
</script>
</body>
</html>
"""


def chat_page(model_name: str) -> str:
    import json

    safe_json = json.dumps(model_name).replace("<", "\\u003c")  # never close the script tag
    return _PAGE.replace("__MODEL_JSON__", safe_json).replace("__MODEL__", html.escape(model_name))
