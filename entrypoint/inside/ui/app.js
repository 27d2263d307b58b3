// llm-entry's chat page: talks to this server's public API with the key the
// user types. The key lives in this page's memory, and in sessionStorage only
// when asked to (it goes with the tab); never in localStorage or the URL.
"use strict";

const KEY_STORE = "llm-entry-key";
const $ = (id) => document.getElementById(id);
const state = { messages: [], controller: null, models: "", keyTimer: null };

function apiKey() {
  return $("key").value.trim();
}

function authHeaders(json) {
  const headers = { Authorization: "Bearer " + apiKey() };
  if (json) headers["Content-Type"] = "application/json";
  return headers;
}

// -- errors, in plain words -----------------------------------------------------

function retryText(seconds) {
  const wait = parseInt(seconds, 10);
  if (!(wait >= 0)) return "";
  const at = new Date(Date.now() + wait * 1000).toLocaleTimeString();
  return " Try again in " + wait + " s (at " + at + ").";
}

function describe(status, retryAfter, message) {
  const detail = message ? " The server said: " + message : "";
  switch (status) {
    case 401: return "The key was not accepted: check it and type it again." + detail;
    case 403: return "This key may not do that." + detail;
    case 413: return "The request is larger than this server accepts: shorten the conversation (New chat).";
    case 429: return "This key has reached one of its limits." + retryText(retryAfter) + detail;
    case 502: case 503: case 504:
      return "The model is not answering yet: the engine is probably starting or restarting. " +
             "Try again in a minute.";
    default:
      if (status >= 400 && status < 500) return "The model refused the request (" + status + ")." + detail;
      return "The server answered " + status + "." + detail;
  }
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    const error = body && body.error;
    if (typeof error === "string") return error;
    if (error && typeof error.message === "string") return error.message;
    if (body && typeof body.detail === "string") return body.detail;
  } catch (ignored) { /* not JSON */ }
  return "";
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// -- the key: models and its own limits -------------------------------------------

async function loadModels() {
  const select = $("model");
  const response = await fetch("/v1/models", { headers: authHeaders(false) });
  if (!response.ok) {
    showError(describe(response.status, response.headers.get("retry-after"), await errorMessage(response)));
    return false;
  }
  const ids = ((await response.json()).data || []).map((model) => model.id);
  if (ids.join("\n") !== state.models) {
    state.models = ids.join("\n");
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
  }
  return true;
}

const LIMIT_NAMES = { rpm: "Requests / min", tpm: "Tokens / min", max_parallel: "At once" };

function row(list, name, value) {
  const term = document.createElement("dt");
  term.textContent = name;
  const detail = document.createElement("dd");
  detail.textContent = value;
  list.append(term, detail);
}

function showKeyInfo(info) {
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = info.name === "master" ? "Master key" : "Key “" + info.name + "” · " + info.source;
  const list = document.createElement("dl");
  const uses = info.usage.concat(info.quotas || []);
  for (const use of uses) {
    row(list, use.period ? "Tokens / " + use.period : LIMIT_NAMES[use.limit] || use.limit,
        use.left.toLocaleString() + " / " + use.allowed.toLocaleString() + " left");
  }
  if (uses.length === 0) row(list, "Limits", "none");
  const resets = Math.max(0, ...info.usage.map((use) => use.resets_in || 0));
  const note = document.createElement("p");
  note.className = "note";
  note.textContent = resets ? "This minute ends in " + resets + " s." : "";
  $("key-info").replaceChildren(who, list, note);
}

async function loadKeyInfo() {
  const response = await fetch("/llm-entry/key", { headers: authHeaders(false) });
  if (response.ok) showKeyInfo(await response.json());
  else $("key-info").replaceChildren();
}

async function keyChanged() {
  const key = apiKey();
  if ($("remember").checked && key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
  $("key-info").replaceChildren();
  if (!key) return;
  clearError();
  try {
    if (await loadModels()) await loadKeyInfo();
  } catch (error) {
    showError("Cannot reach the server: " + error.message);
  }
}

// -- the conversation -------------------------------------------------------------

function addMessage(role, text) {
  $("empty").hidden = true;
  const item = document.createElement("div");
  item.className = "msg " + role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : "Model";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  item.append(label, body);
  $("output").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function numberField(id) {
  const raw = $(id).value.trim();
  return raw === "" ? undefined : Number(raw);
}

function requestBody() {
  const system = $("system").value.trim();
  const body = {
    model: $("model").value || undefined,
    messages: (system ? [{ role: "system", content: system }] : []).concat(state.messages),
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberField("temperature"),
    top_p: numberField("top-p"),
    max_tokens: numberField("max-tokens"),
  };
  return JSON.stringify(body);
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("output").setAttribute("aria-busy", String(busy));   // screen readers read the answer once it is whole
}

function statsText(started, first, ended, tokens, stopped) {
  const said = [];
  if (first !== null) said.push("first token " + Math.round(first - started) + " ms");
  if (tokens) said.push(tokens + (tokens === 1 ? " token" : " tokens"));
  if (tokens > 1 && ended > first) said.push(((tokens - 1) / ((ended - first) / 1000)).toFixed(1) + " tokens/s");
  if (stopped) said.push("stopped");
  return said.join(" · ");
}

// Server-sent events: "data: {json}" blocks separated by a blank line.
function eventsIn(buffer, onData) {
  let cut;
  while ((cut = buffer.indexOf("\n\n")) >= 0) {
    const event = buffer.slice(0, cut);
    buffer = buffer.slice(cut + 2);
    for (const line of event.split("\n")) {
      if (line.startsWith("data:")) onData(line.slice(5).trim());
    }
  }
  return buffer;
}

async function readStream(response, answer, onFirst) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const text = answer.querySelector(".text");
  let buffer = "";
  let usage = null;
  let chunks = 0;
  const onData = (data) => {
    if (data === "[DONE]") return;
    const chunk = JSON.parse(data);
    if (chunk.error) showError(describe(500, null, chunk.error.message || String(chunk.error)));
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) {
      onFirst();
      text.textContent += delta.content;
      chunks += 1;
      answer.scrollIntoView({ block: "end" });
    }
    if (chunk.usage) usage = chunk.usage;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = eventsIn((buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n"), onData);
  }
  return usage ? usage.completion_tokens : chunks;
}

async function send(event) {
  if (event) event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || state.controller) return;
  if (!apiKey()) {
    showError("Type your API key first: the page needs it to talk to the model.");
    $("key").focus();
    return;
  }
  clearError();
  state.messages.push({ role: "user", content: prompt });
  const asked = addMessage("user", prompt);
  $("prompt").value = "";
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  const answer = addMessage("assistant", "");
  answer.classList.add("streaming");
  const started = performance.now();
  let first = null;
  let tokens = 0;
  let stopped = false;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: authHeaders(true), body: requestBody(), signal: controller.signal,
    });
    if (!response.ok) {
      showError(describe(response.status, response.headers.get("retry-after"), await errorMessage(response)));
      answer.remove();
      asked.remove();
      state.messages.pop();
      $("prompt").value = prompt;      // nothing lost: send it again later
      return;
    }
    tokens = await readStream(response, answer, () => { if (first === null) first = performance.now(); });
  } catch (error) {
    if (error.name === "AbortError") stopped = true;
    else showError("The answer broke off: " + error.message);
  } finally {
    state.controller = null;
    setBusy(false);
    answer.classList.remove("streaming");
  }
  const text = answer.querySelector(".text").textContent;
  if (text) state.messages.push({ role: "assistant", content: text });
  const stats = document.createElement("div");
  stats.className = "stats";
  stats.dataset.testid = "stats";
  stats.textContent = statsText(started, first, performance.now(), tokens, stopped);
  answer.append(stats);
  loadKeyInfo().catch(() => {});
}

function stop() {
  if (state.controller) state.controller.abort();   // closes the stream: the server frees the model's slot
}

function newChat() {
  stop();
  state.messages = [];
  $("output").replaceChildren($("empty"));
  $("empty").hidden = false;
  clearError();
  $("prompt").focus();
}

function start() {
  const remembered = sessionStorage.getItem(KEY_STORE);
  if (remembered) {
    $("key").value = remembered;
    $("remember").checked = true;
  }
  $("key").addEventListener("input", () => {
    clearTimeout(state.keyTimer);
    state.keyTimer = setTimeout(keyChanged, 400);
  });
  $("key").addEventListener("change", () => {
    clearTimeout(state.keyTimer);
    keyChanged();
  });
  $("remember").addEventListener("change", keyChanged);
  $("composer").addEventListener("submit", send);
  $("stop").addEventListener("click", stop);
  $("clear").addEventListener("click", newChat);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) send(event);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") stop();
  });
  if (window.matchMedia("(max-width: 760px)").matches) $("settings").open = false;   // a phone: the chat first
  if (remembered) keyChanged();
  ($("key").value ? $("prompt") : $("key")).focus();
}

start();
