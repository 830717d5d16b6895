// The tavrida2 dashboard page: polls /api/state and draws the views (no build step).
"use strict";

let state = null;
let currentView = "topology";
let chainShown = null;

function el(tag, text, attributes) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  return node;
}

function row(cells, attributes) {
  const tr = el("tr", null, attributes);
  for (const cell of cells) {
    if (cell instanceof Node) {
      const td = el("td");
      td.appendChild(cell);
      tr.appendChild(td);
    } else if (cell && typeof cell === "object") {
      tr.appendChild(el("td", cell.text, cell.attributes));
    } else {
      tr.appendChild(el("td", cell === null || cell === undefined ? "–" : cell));
    }
  }
  return tr;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function number(value, className) {
  return { text: value === null || value === undefined ? "?" : value, attributes: { class: className || "number" } };
}

function rate(value) {
  return number(value === null || value === undefined ? null : value.toFixed(1));
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showView(name) {
  currentView = name;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  for (const view of document.querySelectorAll(".view")) {
    view.hidden = view.id !== `view-${name}`;
  }
  if (name === "traces") loadTraces();
}

function drawBanners() {
  const errors = document.getElementById("config-errors");
  errors.hidden = state.errors.length === 0;
  errors.textContent = state.errors.map((e) => `Not loaded: ${e.error}`).join("\n");
  const management = document.getElementById("management-status");
  management.hidden = state.management.ok;
  management.textContent = state.management.ok ? "" :
    `RabbitMQ's management API does not answer (${state.management.error}): queue depths, ` +
    "consumers and rates are unknown; the rest is shown.";
}

function drawTopology() {
  document.getElementById("sources").textContent = state.sources.join(", ") || "no files";
  document.getElementById("broker").textContent = state.broker;
  fill("services-table", state.services.map((s) =>
    row([s.name, s.exchange, s.queue, s.notifications, s.source], { "data-service": s.name })));
}

function drawQueues() {
  fill("queues-table", state.queues.map((q) => row([
    q.name, q.kind + (q.of_queue ? ` of ${q.of_queue}` : ""), q.services.join(", "),
    number(q.messages, "number depth"), number(q.ready), number(q.unacknowledged),
    number(q.consumers, "number consumers"), rate(q.publish_rate), rate(q.deliver_rate),
  ], { "data-queue": q.name, class: q.messages ? "busy" : "" })));
}

function drawInstances() {
  const now = Date.now() / 1000;
  const instances = state.instances;
  fill("instances-table", instances.announced.map((p) => row([
    p.services.join(", "), p.host, p.pid, p.engine, p.version, p.queue,
    `${Math.round(now - p.started_at)} s`, `${p.last_seen} s ago`, p.instance,
  ], { "data-instance": p.instance })));
  let note = instances.announced.length ? "" : "No instance announced itself lately.";
  if (instances.error) note += ` Announcements are not heard: ${instances.error}.`;
  if (!instances.announced.length && instances.consumers.length) {
    note += " The broker's consumers below show what is running.";
  }
  document.getElementById("instances-note").textContent = note.trim();
  fill("consumers-table", instances.consumers.map((c) =>
    row([c.queue, c.connection, c.peer, c.consumer_tag])));
}

function drawDeadLetters() {
  document.getElementById("replay-mode").textContent = state.allow_replay ?
    "Replay is allowed (--allow-replay): a replayed letter goes back where it was first sent." :
    "Read-only: start the dashboard with --allow-replay to replay dead letters.";
  fill("deadletters-table", state.dead_letters.map((q) => {
    const browse = el("button", "Browse", { class: "browse" });
    browse.addEventListener("click", () => browseLetters(q.name));
    const replay = el("button", "Replay…", { class: "replay" });
    replay.disabled = !state.allow_replay || !q.messages;
    replay.addEventListener("click", () => askReplay(q.name, q.messages));
    const actions = el("span");
    actions.append(browse, " ", replay);
    return row([q.name, q.of_queue, number(q.messages, "number depth"), actions],
      { "data-queue": q.name });
  }));
}

async function browseLetters(queue) {
  const panel = document.getElementById("letters");
  panel.hidden = false;
  document.getElementById("letters-queue").textContent = queue;
  try {
    const found = await getJSON(`/api/deadletters/${encodeURIComponent(queue)}`);
    document.getElementById("letters-total").textContent = `${found.total} letter(s)`;
    fill("letters-table", found.letters.map((l) => row([
      l.when, l.message_type, l.destination, `${l.exchange || "(default)"} / ${l.routing_key}`,
      l.attempts, l.code, l.reason, l.message_id,
    ], { "data-message-id": l.message_id })));
  } catch (error) {
    document.getElementById("letters-total").textContent = error.message;
    fill("letters-table", []);
  }
}

function askReplay(queue, count) {
  const dialog = document.getElementById("replay-dialog");
  document.getElementById("replay-queue").textContent = queue;
  document.getElementById("replay-count").textContent = count;
  dialog.dataset.queue = queue;
  dialog.showModal();
}

async function replay(queue) {
  const result = document.getElementById("replay-result");
  result.hidden = false;
  try {
    const done = await getJSON(`/api/deadletters/${encodeURIComponent(queue)}/replay`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ confirm: true }),
    });
    result.textContent = `Replayed ${done.replayed} dead letter(s) of ${done.queue}.`;
    browseLetters(queue);
  } catch (error) {
    result.textContent = `Replay failed: ${error.message}`;
  }
  refresh();
}

function traceRows(records) {
  return records.map((r) => {
    const link = el("a", r.correlation_id, { class: "correlation" });
    link.addEventListener("click", () => followChain(r.correlation_id));
    return row([
      new Date(r.at * 1000).toLocaleTimeString(), r.direction, r.message_type,
      `${r.source || "-"} → ${r.destination || "-"}`, link, r.payload_preview,
    ], { "data-correlation-id": r.correlation_id });
  });
}

async function loadTraces() {
  if (chainShown) return followChain(chainShown);
  const note = document.getElementById("traces-note");
  document.getElementById("trace-chain").hidden = true;
  if (state && !state.traces.enabled) {
    note.textContent = "No trace database: start the dashboard with --db URL.";
    return;
  }
  try {
    const found = await getJSON("/api/traces?limit=50");
    note.textContent = `The ${found.records.length} newest message(s); click a correlation id to follow its chain.`;
    fill("traces-table", traceRows(found.records));
  } catch (error) {
    note.textContent = error.message;
  }
}

async function followChain(correlationId) {
  chainShown = correlationId;
  document.getElementById("correlation-id").value = correlationId;
  const note = document.getElementById("traces-note");
  const chain = document.getElementById("trace-chain");
  try {
    const found = await getJSON(`/api/traces/${encodeURIComponent(correlationId)}`);
    note.textContent = `Chain ${correlationId}: ${found.records.length} message(s).`;
    chain.textContent = found.chain;
    chain.hidden = false;
    fill("traces-table", traceRows(found.records));
  } catch (error) {
    note.textContent = error.message;
    chain.hidden = true;
    fill("traces-table", []);
  }
}

async function refresh() {
  try {
    state = await getJSON("/api/state");
  } catch (error) {
    document.getElementById("updated").textContent = `not updated: ${error.message}`;
    return;
  }
  drawBanners();
  drawTopology();
  drawQueues();
  drawInstances();
  drawDeadLetters();
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function start() {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  document.getElementById("replay-dialog").addEventListener("close", (event) => {
    const dialog = event.target;
    if (dialog.returnValue === "replay") replay(dialog.dataset.queue);
  });
  document.getElementById("trace-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = document.getElementById("correlation-id").value.trim();
    if (wanted) followChain(wanted);
  });
  document.getElementById("trace-clear").addEventListener("click", () => {
    chainShown = null;
    document.getElementById("correlation-id").value = "";
    loadTraces();
  });
  const picture = await fetch("/api/topology.svg");
  document.getElementById("topology-picture").innerHTML = await picture.text();
  await refresh();
  const seconds = (state && state.refresh_seconds) || 2;
  setInterval(() => {
    refresh();
    if (currentView === "traces" && !chainShown) loadTraces();
  }, seconds * 1000);
}

start();
