// The hub's dashboard: channels and their raw deliveries, tasks and their results, live.
// Plain ES2020 with no dependencies, because the page's CSP allows only its own script.
// Every value from the hub reaches the page through textContent or an attribute, never
// as markup.
"use strict";

(() => {
  const KEY_STORAGE = "hub.apiKey";
  const POLL_MS = 3000;
  // Browsers allow about six HTTP/1.1 connections per origin; streams beyond that wait, so
  // only the newest channels and unfinished tasks are watched live (the rest still refresh
  // with the lists every few seconds).
  const MAX_STREAMS = 20;
  const MAX_DELIVERIES = 50;
  const PRESENCE_CHANNELS = 5;
  const MAX_BODY_CHARS = 64 * 1024;
  const TASK_EVENTS = ["task.queued", "task.retrying", "task.rerouted", "task.submitted", "task.succeeded", "task.failed", "task.timed_out", "task.canceled"];
  const TERMINAL = new Set(["succeeded", "failed", "timed_out", "canceled"]);

  const $ = (id) => document.getElementById(id);

  let apiKey = null;
  // Bumped on sign-out, so that answers to requests of an earlier session are dropped.
  let generation = 0;
  let pollTimer = null;
  let polling = false;
  const channels = new Map();
  const tasks = new Map();
  // Callback URLs are shown only when made (on creating a channel, or minted for one):
  // keep the ones made in this tab.
  const callbackUrls = new Map();
  // Delivery panels the person opened or closed themselves, which new arrivals leave alone.
  const touched = new WeakSet();

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  class Stale extends Error {}

  // ---- DOM helpers ------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      // Strings become text nodes: append() never parses them as HTML.
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  // replaceChildren() writes a null as the text "null": leave out what is not there.
  function fill(node, ...children) {
    node.replaceChildren(...children.filter((child) => child !== null && child !== undefined && child !== false));
  }

  function timeEl(iso, withDate) {
    if (!iso) return el("span", { text: "?" });
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return el("span", { text: iso });
    const sameDay = date.toDateString() === new Date().toDateString();
    const text = withDate || !sameDay
      ? date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" })
      : date.toLocaleTimeString();
    return el("time", { datetime: iso, title: iso, text });
  }

  function formatSize(bytes) {
    if (typeof bytes !== "number") return "";
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  }

  function byNewest(a, b) {
    const diff = (Date.parse(b.created_at) || 0) - (Date.parse(a.created_at) || 0);
    return diff !== 0 ? diff : String(b.id).localeCompare(String(a.id));
  }

  // Puts nodes in this order, moving only the ones out of place, so that a focused button
  // or an open panel is not disturbed when nothing moved.
  function order(list, nodes) {
    let cursor = list.firstElementChild;
    for (const node of nodes) {
      if (node === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        list.insertBefore(node, cursor);
      }
    }
    while (cursor) {
      const next = cursor.nextElementSibling;
      cursor.remove();
      cursor = next;
    }
  }

  // The hub's public URL may name another host than the one this page was opened on (a
  // proxy, a tunnel), and the page may only talk to its own origin (connect-src 'self').
  function local(url) {
    const parsed = new URL(url, location.href);
    if (parsed.origin === location.origin) return parsed.href;
    return new URL(parsed.pathname + parsed.search, location.origin).href;
  }

  // ---- the API ------------------------------------------------------------------------

  async function request(path, options, key) {
    const gen = generation;
    const headers = new Headers((options && options.headers) || {});
    headers.set("authorization", `Bearer ${key || apiKey}`);
    if (options && options.body !== undefined) headers.set("content-type", "application/json");
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    } catch (err) {
      throw new ApiError(0, "network", "The hub cannot be reached.");
    }
    if (gen !== generation) throw new Stale();
    if (!response.ok) {
      let code = "http_error";
      let message = `${response.status} ${response.statusText}`.trim();
      try {
        const body = await response.json();
        if (body && body.error) {
          code = String(body.error.code || code);
          message = String(body.error.message || message);
        }
      } catch (err) {
        // Not the hub's error shape (a proxy's page, say): the status line says enough.
      }
      throw new ApiError(response.status, code, message);
    }
    return response;
  }

  async function getJson(path, key) {
    const response = await request(path, {}, key);
    return response.json();
  }

  // ---- signing in and out -------------------------------------------------------------

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("board").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    const error = $("sign-in-error");
    if (!key) {
      error.textContent = "Enter an API key.";
      input.focus();
      return;
    }
    const button = event.target.querySelector("button[type=submit]");
    button.disabled = true;
    error.textContent = "";
    try {
      // The key is kept only once the hub has accepted it.
      await getJson("v1/channels", key);
    } catch (err) {
      if (!(err instanceof Stale)) {
        error.textContent = err.status === 401 ? `Not signed in: ${err.message}` : err.message;
        input.focus();
        input.select();
      }
      return;
    } finally {
      button.disabled = false;
    }
    input.value = "";
    sessionStorage.setItem(KEY_STORAGE, key);
    start(key);
    // The form just vanished; keep keyboard focus at the top of what replaced it.
    $("main").focus();
  }

  function start(key) {
    apiKey = key;
    showSignedIn(true);
    $("board-error").textContent = "";
    $("live-status").textContent = "Loading…";
    refresh();
  }

  function signOut(message) {
    generation += 1;
    clearTimeout(pollTimer);
    pollTimer = null;
    polling = false;
    for (const entry of channels.values()) closeStream(entry);
    for (const entry of tasks.values()) {
      closeStream(entry);
      for (const objectUrl of entry.images.values()) if (objectUrl) URL.revokeObjectURL(objectUrl);
    }
    if (observer) observer.disconnect();
    pending.clear();
    channels.clear();
    tasks.clear();
    callbackUrls.clear();
    $("channels").replaceChildren();
    $("tasks").replaceChildren();
    $("created-channel").hidden = true;
    $("created-callback-url").value = "";
    $("live-status").textContent = "";
    sessionStorage.removeItem(KEY_STORAGE);
    apiKey = null;
    showSignedIn(false);
    $("sign-in-error").textContent = message || "";
    $("api-key").focus();
  }

  // ---- refreshing the lists -----------------------------------------------------------

  async function refresh() {
    if (polling || apiKey === null) return;
    polling = true;
    const gen = generation;
    try {
      const [channelList, taskList, usage] = await Promise.allSettled([
        getJson("v1/channels"),
        getJson("v1/tasks"),
        getJson("v1/usage"),
      ]);
      if (gen !== generation) return;
      if (usage.status === "fulfilled") renderUsage(usage.value);
      const errors = [];
      for (const [result, name, render] of [
        [channelList, "channels", renderChannels],
        [taskList, "tasks", renderTasks],
      ]) {
        if (result.status === "fulfilled") {
          render(Array.isArray(result.value[name]) ? result.value[name] : []);
        } else if (result.reason.status === 401) {
          signOut(`Signed out: ${result.reason.message}`);
          return;
        } else if (!(result.reason instanceof Stale)) {
          errors.push(`Could not list ${name}: ${result.reason.message}`);
        }
      }
      updateStreams();
      refreshPresence(gen);
      $("board-error").textContent = errors.join(" ");
      const live = [...channels.values(), ...tasks.values()].filter((e) => e.source).length;
      $("live-status").textContent =
        `Updated ${new Date().toLocaleTimeString()} · ${live} live stream${live === 1 ? "" : "s"}`;
    } finally {
      // A sign-out in the meantime has already reset the loop; otherwise, go round again.
      if (gen === generation) {
        polling = false;
        pollTimer = setTimeout(refresh, POLL_MS);
      }
    }
  }

  // ---- spend against the budget ----------------------------------------------------------

  function dollars(value) {
    return `$${Number(value || 0).toFixed(value >= 1 ? 2 : 4)}`;
  }

  function renderUsage(report) {
    const budget = report.budget || {};
    const meter = $("usage-meter");
    const spent = dollars(budget.spent_usd);
    if (budget.monthly_usd === null || budget.monthly_usd === undefined) {
      $("usage-summary").textContent = `${budget.month || ""}: ${spent} spent · no budget`;
      meter.hidden = true;
      return;
    }
    $("usage-summary").textContent =
      `${budget.month}: ${spent} of ${dollars(budget.monthly_usd)} · ${dollars(budget.remaining_usd)} left`;
    meter.max = Math.max(budget.monthly_usd, 0.000001);
    meter.high = budget.monthly_usd * 0.8;
    meter.value = Math.min(budget.spent_usd, budget.monthly_usd);
    meter.hidden = false;
  }

  // ---- channels -----------------------------------------------------------------------

  // Open streams on the newest few channels, across every replica (this page's included).
  async function refreshPresence(gen) {
    const newest = [...channels.values()].sort((a, b) => byNewest(a.data, b.data)).slice(0, PRESENCE_CHANNELS);
    await Promise.allSettled(newest.map(async (entry) => {
      const data = await getJson(`v1/channels/${encodeURIComponent(entry.data.id)}`);
      if (gen !== generation || channels.get(entry.data.id) !== entry) return;
      entry.subscribers = data.subscribers;
      updateChannelNode(entry);
    }));
  }

  function renderChannels(list) {
    const seen = new Set();
    for (const data of list) {
      seen.add(data.id);
      if (data.callback_url) callbackUrls.set(data.id, data.callback_url);
      let entry = channels.get(data.id);
      if (!entry) {
        entry = { kind: "channel", data, source: null, lastEventId: 0, deliveries: 0 };
        entry.node = channelNode(entry);
        channels.set(data.id, entry);
      }
      entry.data = data;
      updateChannelNode(entry);
    }
    for (const [id, entry] of channels) {
      if (!seen.has(id)) {
        closeStream(entry);
        channels.delete(id);
      }
    }
    const sorted = [...channels.values()].sort((a, b) => byNewest(a.data, b.data));
    order($("channels"), sorted.map((entry) => entry.node));
    $("channels-empty").hidden = channels.size > 0;
  }

  function channelNode(entry) {
    const id = entry.data.id;
    const titleId = `channel-${id}-title`;
    entry.title = el("h3", { id: titleId });
    entry.meta = el("p", { class: "meta" });
    entry.streamState = el("span", { class: "stream-state" });
    entry.callbackRow = el("div", { class: "copy-row", hidden: true });
    entry.mintButton = el("button", { type: "button", class: "mint", text: "New callback URL" });
    entry.mintButton.addEventListener("click", () => mintCallbackUrl(entry));
    entry.deleteButton = el("button", { type: "button", class: "danger", text: "Delete channel" });
    entry.deleteButton.addEventListener("click", () => deleteChannel(entry));
    entry.actionStatus = el("span", { class: "note", role: "status" });
    entry.count = el("span", { class: "count" });
    entry.empty = el("p", { class: "note", text: "No deliveries yet." });
    entry.list = el("ol", { class: "deliveries", "aria-label": `Deliveries to ${id}, newest first` });
    return el(
      "li",
      { class: "card channel", "data-channel-id": id },
      el(
        "article",
        { "aria-labelledby": titleId },
        el("header", { class: "card-head" }, entry.title, entry.streamState),
        entry.meta,
        el("div", { class: "actions" }, entry.mintButton, entry.deleteButton, entry.actionStatus),
        entry.callbackRow,
        el("h4", {}, "Deliveries ", entry.count),
        entry.empty,
        entry.list,
      ),
    );
  }

  function updateChannelNode(entry) {
    const data = entry.data;
    entry.title.textContent = data.label || "Unlabelled channel";
    fill(
      entry.meta,
      el("code", { text: data.id }),
      " · made ",
      timeEl(data.created_at, true),
      " · expires ",
      timeEl(data.expires_at, true),
      typeof entry.subscribers === "number"
        ? el("span", { class: "presence", text: ` · ${entry.subscribers} watching` })
        : null,
      data.verify ? el("span", { class: "verifier", text: ` · verifies ${data.verify.scheme}` }) : null,
      data.task_id_path ? el("span", { text: ` · task id at ${data.task_id_path}` }) : null,
    );
    showCallbackUrl(entry);
  }

  // The callback URL last made for the channel in this tab (a URL is a credential: the hub
  // shows it once, when made, so after a reload a new one is minted on request).
  function showCallbackUrl(entry) {
    const data = entry.data;
    const callbackUrl = callbackUrls.get(data.id);
    if (callbackUrl && entry.callbackRow.dataset.url !== callbackUrl) {
      entry.callbackRow.dataset.url = callbackUrl;
      const inputId = `channel-${data.id}-callback`;
      const input = el("input", { id: inputId, type: "text", readonly: true, spellcheck: "false" });
      input.value = callbackUrl;
      const status = el("span", { class: "note", role: "status" });
      const button = el("button", { type: "button", text: "Copy" });
      button.addEventListener("click", () => copy(input, status));
      entry.callbackRow.replaceChildren(
        el("label", { for: inputId, text: "Callback URL" }),
        input,
        button,
        status,
      );
      entry.callbackRow.hidden = false;
    }
  }

  async function mintCallbackUrl(entry) {
    entry.mintButton.disabled = true;
    entry.actionStatus.textContent = "";
    try {
      const response = await request("v1/callback-urls", {
        method: "POST",
        body: JSON.stringify({ channel_id: entry.data.id }),
      });
      const made = await response.json();
      callbackUrls.set(entry.data.id, made.callback_url);
      showCallbackUrl(entry);
      const input = entry.callbackRow.querySelector("input");
      if (input) {
        input.focus();
        input.select();
      }
    } catch (err) {
      if (err instanceof Stale) return;
      if (err.status === 401) signOut(`Signed out: ${err.message}`);
      else entry.actionStatus.textContent = `Could not make a callback URL: ${err.message}`;
    } finally {
      entry.mintButton.disabled = false;
    }
  }

  // Two clicks: the first asks, the second erases (deliveries, events and URLs go).
  async function deleteChannel(entry) {
    if (entry.deleteButton.dataset.armed !== "yes") {
      entry.deleteButton.dataset.armed = "yes";
      entry.deleteButton.textContent = "Really delete? Its deliveries and URLs go too";
      return;
    }
    entry.deleteButton.disabled = true;
    try {
      await request(`v1/channels/${encodeURIComponent(entry.data.id)}`, { method: "DELETE" });
      closeStream(entry);
      channels.delete(entry.data.id);
      callbackUrls.delete(entry.data.id);
      entry.node.remove();
      $("channels-empty").hidden = channels.size > 0;
      if ($("created-channel-id").textContent === entry.data.id) $("created-channel").hidden = true;
      $("live-status").textContent = `Deleted channel ${entry.data.id}.`;
    } catch (err) {
      if (err instanceof Stale) return;
      if (err.status === 401) signOut(`Signed out: ${err.message}`);
      else entry.actionStatus.textContent = `Could not delete: ${err.message}`;
      entry.deleteButton.disabled = false;
    }
  }

  // The newest deliveries come from the history route, once; the stream then carries on
  // from the newest of them (no replay of the whole history).
  async function openChannelStream(entry) {
    if (entry.opening) return;
    if (!entry.historyLoaded) {
      entry.historyLoaded = true;
      entry.opening = true;
      try {
        const page = await getJson(
          `v1/channels/${encodeURIComponent(entry.data.id)}/deliveries?limit=${MAX_DELIVERIES}`,
        );
        const list = Array.isArray(page.deliveries) ? page.deliveries : [];
        for (const delivery of list.slice().reverse()) showDelivery(entry, delivery.event_id, fromHistory(delivery));
        entry.deliveries = list.length;
        if (page.next_before) entry.more = true;
        updateCount(entry);
      } catch (err) {
        entry.historyLoaded = false;
        entry.opening = false;
        if (!(err instanceof Stale)) entry.actionStatus.textContent = `Could not load history: ${err.message}`;
        return;
      }
      entry.opening = false;
      if (!channels.has(entry.data.id) || entry.source) return;
    }
    const url = new URL(local(entry.data.watch_url));
    url.searchParams.set("types", "callback.received");
    // After the newest one shown (the browser's own reconnects send Last-Event-ID, which
    // the hub prefers).
    url.searchParams.set("last_event_id", String(entry.lastEventId));
    const source = new EventSource(url.href);
    source.addEventListener("callback.received", (event) => onDelivery(entry, event));
    watchState(entry, source);
    entry.source = source;
  }

  // A history entry in the shape of a callback.received event (its body read on request).
  function fromHistory(delivery) {
    const headers = {};
    for (const [name, value] of delivery.headers || []) {
      const key = String(name).toLowerCase();
      headers[key] = key in headers ? `${headers[key]}, ${value}` : String(value);
    }
    const query = {};
    for (const [name, value] of new URLSearchParams(delivery.query || "")) {
      if (name in query) query[name] = [].concat(query[name], value);
      else query[name] = value;
    }
    return {
      delivery_id: delivery.id,
      task_id: delivery.task_id,
      verified: delivery.verified,
      content_type: delivery.content_type,
      size: delivery.size,
      at: delivery.received_at,
      headers,
      rawHeaders: delivery.headers || [],
      query,
      body_pending: true,
    };
  }

  function updateCount(entry) {
    entry.count.textContent =
      entry.deliveries > MAX_DELIVERIES || entry.more
        ? `(newest ${MAX_DELIVERIES})`
        : `(${entry.deliveries})`;
    entry.empty.hidden = entry.deliveries > 0;
  }

  function onDelivery(entry, event) {
    const id = Number(event.lastEventId);
    if (Number.isFinite(id) && id > 0 && id <= entry.lastEventId) return;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    showDelivery(entry, id, data);
    entry.deliveries += 1;
    updateCount(entry);
  }

  function showDelivery(entry, id, data) {
    if (Number.isFinite(id) && id > entry.lastEventId) entry.lastEventId = id;
    const node = deliveryNode(id, data);
    const previous = entry.list.firstElementChild;
    entry.list.prepend(node);
    // The newest delivery is shown open; the one it replaces closes, unless it was the
    // person who opened it.
    const details = node.querySelector("details");
    details.open = true;
    if (previous) {
      const old = previous.querySelector("details");
      if (old && !touched.has(old)) old.open = false;
    }
    while (entry.list.children.length > MAX_DELIVERIES) entry.list.lastElementChild.remove();
  }

  function deliveryNode(id, data) {
    const contentType = data.content_type || "no content type";
    const summary = el(
      "summary",
      {},
      timeEl(data.at),
      " ",
      el("span", { class: "ctype", text: contentType }),
      " ",
      el("span", { class: "size", text: formatSize(data.size) }),
      // Only a key that names a task (or the channel's task_id_path) gives one.
      data.task_id ? el("span", { class: "ref", text: ` task ${data.task_id}` }) : null,
      data.verified ? el("span", { class: "verified", text: " verified" }) : null,
    );
    const details = el("details", {}, summary);
    summary.addEventListener("click", () => touched.add(details));
    const parts = el("div", { class: "delivery-parts" });
    if (data.delivery_id) parts.append(deliveryActions(data));
    if (data.headers && typeof data.headers === "object") {
      parts.append(el("h5", { text: "Headers" }), pairsTable(data.headers, "Header"));
    }
    if (data.query && typeof data.query === "object" && Object.keys(data.query).length > 0) {
      parts.append(el("h5", { text: "Query" }), pairsTable(data.query, "Parameter"));
    }
    if (data.body_pending) {
      // From history: the body is read from the hub when the panel is opened.
      const holder = el("div", { class: "body-holder" }, el("h5", { text: "Body" }),
        el("p", { class: "note", text: "Loading…" }));
      parts.append(holder);
      const load = async () => {
        if (!details.open || holder.dataset.loaded) return;
        holder.dataset.loaded = "yes";
        try {
          const bytes = await deliveryBytes(data.delivery_id);
          holder.replaceChildren(...bodyParts({ ...data, ...parsedBody(data.content_type, bytes) }));
        } catch (err) {
          if (!(err instanceof Stale)) holder.replaceChildren(el("p", { class: "error", text: err.message }));
        }
      };
      details.addEventListener("toggle", load);
    } else {
      parts.append(...bodyParts(data));
    }
    details.append(parts);
    return el("li", { class: "delivery", "data-event-id": Number.isFinite(id) ? id : null }, details);
  }

  async function deliveryBytes(deliveryId) {
    const response = await request(`v1/deliveries/${encodeURIComponent(deliveryId)}/body`, {});
    return new Uint8Array(await response.arrayBuffer());
  }

  // The body as a callback.received event would show it: JSON, a form, text or base64.
  function parsedBody(contentType, bytes) {
    const size = bytes.length;
    if (size > MAX_BODY_CHARS * 4) return { body_truncated: true, size };
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (err) {
      return { body: base64(bytes), body_encoding: "base64", size };
    }
    const media = String(contentType || "").split(";")[0].trim().toLowerCase();
    if (media === "application/json" || media.endsWith("+json")) {
      try {
        return { body: JSON.parse(text), size };
      } catch (err) {
        return { body: text, size };
      }
    }
    if (isForm(contentType)) {
      const form = {};
      for (const [name, value] of new URLSearchParams(text)) {
        form[name] = name in form ? [].concat(form[name], value) : value;
      }
      return { body: form, size };
    }
    return { body: text, size };
  }

  function base64(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(binary);
  }

  function shellQuote(text) {
    return `'${String(text).replace(/'/g, "'\\''")}'`;
  }

  const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"]);

  // The stored request as a curl command: its headers and its exact bytes (as text when
  // they are text, else decoded from base64), aimed at $URL.
  async function curlCommand(data) {
    const bytes = await deliveryBytes(data.delivery_id);
    const pairs = data.rawHeaders || Object.entries(data.headers || {});
    const lines = ["curl -X POST \"$URL\""];
    for (const [name, value] of pairs) {
      if (HOP_BY_HOP.has(String(name).toLowerCase())) continue;
      lines.push(`  -H ${shellQuote(`${name}: ${value}`)}`);
    }
    let text = null;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (err) {
      text = null;
    }
    if (text !== null && !text.includes("\0")) {
      lines.push(`  --data-binary ${shellQuote(text)}`);
      return lines.join(" \\\n");
    }
    return `printf %s ${shellQuote(base64(bytes))} | base64 -d | ${lines.join(" \\\n")} \\\n  --data-binary @-`;
  }

  function deliveryActions(data) {
    const status = el("span", { class: "note", role: "status" });
    const curl = el("button", { type: "button", text: "Copy as cURL" });
    curl.addEventListener("click", async () => {
      try {
        const command = await curlCommand(data);
        try {
          await navigator.clipboard.writeText(command);
          status.textContent = "Copied (set URL first).";
        } catch (err) {
          status.replaceChildren(el("pre", { class: "curl", tabindex: "0" }, el("code", { text: command })));
        }
      } catch (err) {
        if (!(err instanceof Stale)) status.textContent = err.message;
      }
    });
    const inputId = `redeliver-${data.delivery_id}`;
    const target = el("input", { id: inputId, type: "url", placeholder: "https://… (empty: the channel's webhooks)", spellcheck: "false" });
    const send = el("button", { type: "button", text: "Redeliver" });
    send.addEventListener("click", async () => {
      send.disabled = true;
      status.textContent = "Sending…";
      try {
        const url = target.value.trim();
        const response = await request(`v1/deliveries/${encodeURIComponent(data.delivery_id)}/redeliver`, {
          method: "POST",
          body: JSON.stringify(url ? { url } : {}),
        });
        const answer = await response.json();
        status.textContent = (answer.attempts || [])
          .map((a) => `${a.url}: ${a.status === null ? a.error : `HTTP ${a.status}`} in ${a.duration_ms} ms`)
          .join("; ");
      } catch (err) {
        if (!(err instanceof Stale)) status.textContent = `Not redelivered: ${err.message}`;
      } finally {
        send.disabled = false;
      }
    });
    return el(
      "div",
      { class: "delivery-actions" },
      curl,
      el("label", { for: inputId, text: "Redeliver to" }),
      target,
      send,
      status,
    );
  }

  function isForm(contentType) {
    return String(contentType || "").split(";")[0].trim().toLowerCase() === "application/x-www-form-urlencoded";
  }

  function pairsTable(object, nameHeading) {
    const rows = [];
    for (const [name, value] of Object.entries(object)) {
      const values = Array.isArray(value) ? value : [value];
      for (const one of values) {
        const text = typeof one === "string" ? one : JSON.stringify(one);
        rows.push(el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text })));
      }
    }
    return el(
      "table",
      { class: "pairs" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: nameHeading }), el("th", { scope: "col", text: "Value" }))),
      el("tbody", {}, ...rows),
    );
  }

  function bodyParts(data) {
    if (data.body_truncated) {
      return [
        el("h5", { text: "Body" }),
        el("p", { class: "note", text: `Too large to show (${formatSize(data.size)}); the hub kept it whole.` }),
      ];
    }
    let heading = "Body";
    let text;
    if (data.body_encoding === "base64") {
      heading = "Body (bytes, base64)";
      text = String(data.body);
    } else if (data.body === null || data.body === undefined || data.body === "") {
      return [el("h5", { text: "Body" }), el("p", { class: "note", text: "Empty." })];
    } else if (typeof data.body === "string") {
      text = data.body;
    } else if (isForm(data.content_type) && typeof data.body === "object" && !Array.isArray(data.body)) {
      return [el("h5", { text: "Body (form)" }), pairsTable(data.body, "Field")];
    } else {
      heading = "Body (JSON)";
      text = JSON.stringify(data.body, null, 2);
    }
    const parts = [el("h5", { text: heading })];
    if (text.length > MAX_BODY_CHARS) {
      parts.push(el("p", { class: "note", text: `First ${MAX_BODY_CHARS} characters of ${text.length}.` }));
      text = text.slice(0, MAX_BODY_CHARS);
    }
    parts.push(el("pre", { class: "body", tabindex: "0" }, el("code", { text })));
    return parts;
  }

  async function createChannel(event) {
    event.preventDefault();
    const form = event.target;
    const button = form.querySelector("button[type=submit]");
    const label = $("channel-label").value.trim();
    button.disabled = true;
    try {
      const response = await request("v1/channels", {
        method: "POST",
        body: JSON.stringify(label ? { label } : {}),
      });
      const channel = await response.json();
      callbackUrls.set(channel.id, channel.callback_url);
      $("created-channel-id").textContent = channel.id;
      $("created-callback-url").value = channel.callback_url;
      $("copy-result").textContent = "";
      $("created-channel").hidden = false;
      $("channel-label").value = "";
      $("board-error").textContent = "";
      renderChannels([channel, ...[...channels.values()].map((e) => e.data)]);
      updateStreams();
      $("created-callback-url").focus();
      $("created-callback-url").select();
    } catch (err) {
      if (err instanceof Stale) return;
      if (err.status === 401) signOut(`Signed out: ${err.message}`);
      else $("board-error").textContent = `Could not create a channel: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  async function copy(input, status) {
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = "Copied.";
    } catch (err) {
      input.focus();
      input.select();
      status.textContent = "Selected: press Ctrl+C to copy.";
    }
  }

  // ---- tasks --------------------------------------------------------------------------

  function rank(status) {
    if (TERMINAL.has(status)) return 2;
    return status === "submitted" ? 1 : 0;
  }

  function renderTasks(list) {
    const seen = new Set();
    for (const data of list) {
      seen.add(data.id);
      let entry = tasks.get(data.id);
      if (!entry) {
        entry = { kind: "task", data, source: null, images: new Map() };
        entry.node = taskNode(entry);
        tasks.set(data.id, entry);
      } else if (rank(data.status) < rank(entry.data.status)) {
        // A list fetched before the stream's last event must not move a task back.
        continue;
      }
      entry.data = data;
      updateTaskNode(entry);
    }
    for (const [id, entry] of tasks) {
      if (!seen.has(id)) {
        closeStream(entry);
        for (const objectUrl of entry.images.values()) if (objectUrl) URL.revokeObjectURL(objectUrl);
        tasks.delete(id);
      }
    }
    const sorted = [...tasks.values()].sort((a, b) => byNewest(a.data, b.data));
    order($("tasks"), sorted.map((entry) => entry.node));
    $("tasks-empty").hidden = tasks.size > 0;
  }

  function taskNode(entry) {
    const id = entry.data.id;
    const titleId = `task-${id}-title`;
    entry.title = el("h3", { id: titleId });
    entry.status = el("span", { class: "status" });
    entry.streamState = el("span", { class: "stream-state" });
    entry.meta = el("p", { class: "meta" });
    entry.error = el("p", { class: "error task-error", hidden: true });
    entry.retries = el("ol", { class: "retries", "aria-label": "retries", hidden: true });
    entry.prompt = el("p", { class: "prompt", hidden: true });
    entry.inputs = el("div", { class: "inputs", role: "group", "aria-label": "input images", hidden: true });
    entry.route = el("div", { class: "route", hidden: true });
    entry.cancel = el("button", { type: "button", class: "cancel", hidden: true, text: "Cancel task" });
    entry.cancelResult = el("p", { class: "note cancel-result", role: "status", "aria-live": "polite" });
    entry.cancel.addEventListener("click", () => cancelTask(entry));
    entry.outputs = el("div", { class: "outputs" });
    return el(
      "li",
      { class: "card task", "data-task-id": id },
      el(
        "article",
        { "aria-labelledby": titleId },
        el("header", { class: "card-head" }, entry.title, entry.status, entry.streamState),
        entry.meta,
        entry.prompt,
        entry.inputs,
        entry.route,
        el("div", { class: "actions" }, entry.cancel, entry.cancelResult),
        entry.retries,
        entry.error,
        entry.outputs,
      ),
    );
  }

  function updateTaskNode(entry) {
    const data = entry.data;
    entry.node.dataset.status = data.status;
    entry.title.textContent = data.provider || "task";
    entry.status.textContent = String(data.status).replace("_", " ");
    entry.status.className = `status status-${data.status}`;
    fill(
      entry.meta,
      el("code", { text: data.id }),
      " · made ",
      timeEl(data.created_at),
      data.updated_at ? " · updated " : null,
      data.updated_at ? timeEl(data.updated_at) : null,
      typeof data.attempts === "number" ? ` · attempts ${data.attempts}` : null,
      data.cost ? ` · ${costText(data.cost)}` : null,
    );
    entry.error.textContent = errorText(data.error);
    entry.error.hidden = !entry.error.textContent;
    // What the task itself reports (GET /v1/tasks/{id}) until its events say more: a
    // waiting task's last failed attempt (``attempts`` counts the sends so far, the last of
    // which failed); an ended one's last retry (its stream is not opened again).
    if (!entry.retries.childElementCount && data.last_error) {
      const ended = TERMINAL.has(data.status);
      addRetry(entry, {
        attempt: ended ? undefined : data.attempts,
        label: ended ? "last retry" : undefined,
        error: data.last_error,
        retry_at: ended ? null : data.next_attempt_at,
      });
    }
    showInput(entry);
    showRoute(entry);
    // Only a task that has not ended can be canceled (POST /v1/tasks/{id}/cancel).
    entry.cancel.hidden = TERMINAL.has(data.status);
    if (data.status === "succeeded") showOutputs(entry);
  }

  // What was asked: the prompt, and the input images as thumbnails (fetched with the key,
  // like the outputs). The input never changes, so it is drawn once.
  function showInput(entry) {
    const input = entry.data.input;
    if (!input || entry.inputShown) return;
    entry.inputShown = true;
    if (typeof input.prompt === "string" && input.prompt) {
      entry.prompt.replaceChildren(el("span", { class: "label", text: "Prompt" }), " ", el("q", { text: input.prompt }));
      entry.prompt.hidden = false;
    }
    const images = Array.isArray(input.images) ? input.images.filter((url) => typeof url === "string") : [];
    images.forEach((url, index) => {
      const what = `Input image ${index + 1} of ${images.length} of task ${entry.data.id}`;
      const caption = el("figcaption", { text: `input ${index + 1} · loading…` });
      const figure = el("figure", { class: "input-image" }, caption);
      entry.inputs.append(figure);
      whenVisible(figure, () => loadThumbnail(entry, url, what, figure, caption, index));
    });
    entry.inputs.hidden = images.length === 0;
  }

  async function loadThumbnail(entry, url, what, figure, caption, index) {
    try {
      const objectUrl = await imageBlob(entry, url);
      if (!objectUrl) return;
      const img = el("img", { alt: what, src: objectUrl, decoding: "async" });
      img.addEventListener("load", () => {
        caption.textContent = `input ${index + 1} · ${img.naturalWidth}×${img.naturalHeight}`;
      });
      figure.prepend(img);
    } catch (err) {
      if (err instanceof Stale) return;
      caption.textContent = `input ${index + 1} · could not load: ${err.message}`;
    }
  }

  // Each provider the task was sent to, in order (``task.route``, where the hub gives it),
  // with how it went and whether it was billed; and where the task is now.
  function showRoute(entry) {
    const route = Array.isArray(entry.data.route) ? entry.data.route : [];
    if (route.length < 2) {  // shown once the task has moved: one provider is the card's own line
      entry.route.hidden = true;
      return;
    }
    const steps = route.map((step, index) => {
      const item = step && typeof step === "object" ? step : {};
      const billed = item.billed === true ? "billed yes" : item.billed === false ? "billed no" : "billed ?";
      return el(
        "li",
        { class: "route-step", "data-outcome": String(item.outcome || "") },
        el("strong", { text: String(item.provider || "?") }),
        ` · ${String(item.outcome || "?")} · ${billed}`,
        item.reason ? ` · ${errorText(item.reason)}` : null,
      );
    });
    entry.route.replaceChildren(
      el("p", { class: "route-now" }, "Route · now at ", el("strong", { text: String(entry.data.provider || "?") })),
      el("ol", { class: "route-steps", "aria-label": "providers tried" }, ...steps),
    );
    entry.route.hidden = false;
  }

  async function cancelTask(entry) {
    const gen = generation;
    entry.cancel.disabled = true;
    entry.cancelResult.textContent = "Canceling…";
    try {
      const response = await request(`v1/tasks/${encodeURIComponent(entry.data.id)}/cancel`, { method: "POST" });
      const task = await response.json();
      if (gen !== generation || tasks.get(entry.data.id) !== entry) return;
      entry.cancelResult.textContent = `Task ${String(task.status || "canceled").replace("_", " ")}.`;
      if (task && task.id === entry.data.id && rank(task.status) >= rank(entry.data.status)) {
        entry.data = { ...entry.data, ...task };
        updateTaskNode(entry);
      }
    } catch (err) {
      if (err instanceof Stale) return;
      entry.cancelResult.textContent = `Could not cancel: ${err.message}`;
    } finally {
      entry.cancel.disabled = false;
    }
  }

  function errorText(error) {
    if (error === null || error === undefined) return "";
    if (typeof error === "string") return error;
    return error.code ? `${error.code}: ${error.message || ""}` : JSON.stringify(error);
  }

  function costText(cost) {
    const usd = (value) => (typeof value === "number" ? `$${value.toFixed(3)}` : "–");
    return cost.billed_usd === null || cost.billed_usd === undefined
      ? `estimated ${usd(cost.estimated_usd)}`
      : `billed ${usd(cost.billed_usd)} (estimated ${usd(cost.estimated_usd)})`;
  }

  // Each failed attempt, and each wait for the provider's slot, with its reason and when
  // the next try is due: a task that waits says why.
  function addRetry(entry, retry) {
    const attempt =
      retry.label || (typeof retry.attempt === "number" ? `attempt ${retry.attempt}` : "waiting");
    // Replayed events, and the task's own last_error, may say the same retry twice.
    const key = `${attempt}|${errorText(retry.error)}`;
    entry.retrySeen = entry.retrySeen || new Set();
    if (entry.retrySeen.has(key)) return;
    entry.retrySeen.add(key);
    entry.retries.append(
      el(
        "li",
        { class: "retry" },
        `${attempt}: ${errorText(retry.error)}`,
        retry.retry_at ? " · next try " : null,
        retry.retry_at ? timeEl(retry.retry_at) : null,
      ),
    );
    entry.retries.hidden = false;
  }

  function showOutputs(entry) {
    const outputs = Array.isArray(entry.data.outputs) ? entry.data.outputs : [];
    outputs.forEach((output, index) => {
      if (!output || !output.url || entry.images.has(output.url)) return;
      entry.images.set(output.url, null);
      const what = `Output ${index + 1} of ${outputs.length} of task ${entry.data.id}`;
      const caption = el("figcaption", { text: output.content_type || "" });
      const figure = el("figure", { class: "output" }, caption);
      entry.outputs.append(figure);
      if (!String(output.content_type || "").startsWith("image/")) return;
      caption.textContent = `${output.content_type} · loading…`;
      whenVisible(figure, () => loadImage(entry, output, what, figure, caption));
    });
  }

  // Each image is a request with the key and a blob kept in memory: fetch only the ones
  // scrolled to, not every output of every task listed.
  const pending = new Map();
  const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/webp"]);
  const observer =
    "IntersectionObserver" in window
      ? new IntersectionObserver(
          (seen) => {
            for (const item of seen) {
              if (!item.isIntersecting) continue;
              observer.unobserve(item.target);
              const load = pending.get(item.target);
              pending.delete(item.target);
              if (load) load();
            }
          },
          { rootMargin: "200px" },
        )
      : null;

  function whenVisible(node, load) {
    if (!observer) {
      load();
      return;
    }
    pending.set(node, load);
    observer.observe(node);
  }

  // A blob: URL for one of the hub's images, kept with the task (and revoked with it);
  // null if the task is gone from the page meanwhile.
  async function imageBlob(entry, url) {
    // Blob URLs need the key, which an <img src> cannot send: fetch, then show a blob:.
    const response = await request(local(url));
    // Only the image types the hub keeps, whatever a response says: a blob: URL opened
    // in a tab runs in this page's origin, so it must never be SVG or HTML.
    const type = (response.headers.get("content-type") || "").split(";")[0].trim();
    if (!IMAGE_TYPES.has(type)) throw new Error(`not an image the hub keeps (${type || "no type"})`);
    const objectUrl = URL.createObjectURL(new Blob([await response.arrayBuffer()], { type }));
    if (tasks.get(entry.data.id) !== entry) {
      URL.revokeObjectURL(objectUrl);
      return null;
    }
    entry.images.set(url, objectUrl);
    return objectUrl;
  }

  async function loadImage(entry, output, what, figure, caption) {
    try {
      const objectUrl = await imageBlob(entry, output.url);
      if (!objectUrl) return;
      const img = el("img", { alt: what, src: objectUrl, decoding: "async" });
      img.addEventListener("load", () => {
        caption.replaceChildren(
          `${output.content_type} · ${img.naturalWidth}×${img.naturalHeight} · `,
          el("a", { href: objectUrl, download: `${entry.data.id}-${output.url.split("/").pop()}`, text: "download" }),
        );
      });
      figure.prepend(img);
    } catch (err) {
      if (err instanceof Stale) return;
      // Let the next refresh try again.
      entry.images.delete(output.url);
      figure.remove();
      entry.error.textContent = `Could not load an output: ${err.message}`;
      entry.error.hidden = false;
    }
  }

  function openTaskStream(entry) {
    const source = new EventSource(local(entry.data.watch_url));
    for (const type of TASK_EVENTS) {
      source.addEventListener(type, (event) => onTaskEvent(entry, source, event));
    }
    watchState(entry, source);
    entry.source = source;
  }

  function onTaskEvent(entry, source, event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    if (event.type === "task.retrying") {
      addRetry(entry, data);
      return;
    }
    if (event.type === "task.rerouted") {
      // The task left a provider that did not bill it: its route gains that step, and
      // the new provider is the one now responsible.
      const before = (entry.data.route || []).slice(0, -1);
      const left = { provider: data.from, outcome: data.reason, billed: false, reason: data.error ? data.error.message : undefined };
      const now = { provider: data.to, outcome: entry.data.status, billed: false };
      entry.data = { ...entry.data, provider: data.to, route: [...before, left, now] };
      updateTaskNode(entry);
      return;
    }
    if (rank(data.status) >= rank(entry.data.status)) {
      const next = { ...entry.data, status: data.status };
      for (const field of ["outputs", "error", "provider", "provider_task_id", "route"]) {
        if (field in data) next[field] = data[field];
      }
      if (data.at) next.updated_at = data.at;
      entry.data = next;
      updateTaskNode(entry);
    }
    if (TERMINAL.has(data.status)) {
      // The hub closes a task's stream after its last event: reconnecting would only
      // replay it.
      source.close();
      if (entry.source === source) entry.source = null;
      entry.streamState.textContent = "";
    }
  }

  // ---- streams ------------------------------------------------------------------------

  function watchState(entry, source) {
    const show = () => {
      if (entry.source !== source) return;
      const state = source.readyState;
      entry.streamState.textContent =
        state === EventSource.OPEN ? "live" : state === EventSource.CONNECTING ? "reconnecting…" : "not live";
      entry.streamState.dataset.state = state === EventSource.OPEN ? "open" : "closed";
    };
    source.addEventListener("open", show);
    source.addEventListener("error", show);
    entry.streamState.textContent = "connecting…";
    entry.streamState.dataset.state = "closed";
  }

  function closeStream(entry) {
    if (entry.source) entry.source.close();
    entry.source = null;
  }

  function updateStreams() {
    const candidates = [
      ...channels.values(),
      ...[...tasks.values()].filter((entry) => !TERMINAL.has(entry.data.status)),
    ]
      .filter((entry) => entry.data.watch_url)
      .sort((a, b) => byNewest(a.data, b.data));
    const wanted = new Set(candidates.slice(0, MAX_STREAMS));
    for (const entry of [...channels.values(), ...tasks.values()]) {
      if (!wanted.has(entry)) {
        if (entry.source) closeStream(entry);
        const watching = entry.kind === "channel" || !TERMINAL.has(entry.data.status);
        entry.streamState.textContent = watching ? "not live (too many streams)" : "";
        entry.streamState.dataset.state = "closed";
      }
    }
    for (const entry of wanted) {
      // A stream the browser gave up on (an expired watch token, say) opens again with the
      // fresh watch URL from the latest list.
      if (entry.source && entry.source.readyState !== EventSource.CLOSED) continue;
      if (entry.kind === "channel") openChannelStream(entry);
      else openTaskStream(entry);
    }
  }

  // ---- start --------------------------------------------------------------------------

  function init() {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("new-channel-form").addEventListener("submit", createChannel);
    $("copy-callback-url").addEventListener("click", () => copy($("created-callback-url"), $("copy-result")));
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) start(key);
    else {
      showSignedIn(false);
      $("api-key").focus();
    }
  }

  init();
})();
