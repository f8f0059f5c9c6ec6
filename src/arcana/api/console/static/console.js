// Arcana admin console. Plain ES module, no dependencies, no build step.
// The access token lives in this module's memory only; the refresh token is an HttpOnly
// cookie the browser keeps (set by /auth/login and /auth/refresh for X-Arcana-Client: browser).

const API = "/api/v1";
const BROWSER = { "X-Arcana-Client": "browser" };
const STATUSES = ["Draft", "Active", "Inactive", "Archived"];
const JOB_STATUSES = ["queued", "scheduled", "running", "retrying", "dead", "succeeded"];
const MAX_EVENTS = 300;

const state = {
  token: null,
  me: null,
  refreshTimer: null,
  events: [],          // newest last
  pausedEvents: [],
  eventsPaused: false,
  eventFilter: "",
  lastEventId: null,
  stream: null,        // AbortController of the event stream
  view: null,
  viewTimer: null,
};

// ---- DOM helpers (elements are built, never parsed from strings) ------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);
let fieldSeq = 0;
function field(label, input) {
  const id = input.id || `f${++fieldSeq}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}
function table(caption, headers, rows) {
  return h("table", {},
    h("caption", { class: "muted" }, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length }, "Nothing here."))));
}
function say(message, bad = false) {
  const el = $("status");
  el.textContent = message;
  el.classList.toggle("bad", bad);
}
const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

// ---- API ----------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code;
  }
}

async function refreshToken() {
  const r = await fetch(`${API}/auth/refresh`, { method: "POST", headers: BROWSER, credentials: "same-origin" });
  if (!r.ok) return false;
  acceptTokens(await r.json());
  return true;
}

function acceptTokens(body) {
  state.token = body.access_token;  // the refresh token in the body is left alone: the cookie has it
  clearTimeout(state.refreshTimer);
  const inMs = Math.max(5, body.expires_in - 60) * 1000;
  state.refreshTimer = setTimeout(() => refreshToken().catch(() => {}), inMs);
}

async function request(method, path, body, { retry = true, raw = false } = {}) {
  const headers = { ...BROWSER };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(API + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 && retry && state.token && (await refreshToken())) {
    return request(method, path, body, { retry: false, raw });
  }
  if (!r.ok) {
    let problem = null;
    try { problem = await r.json(); } catch { /* not JSON */ }
    if (r.status === 401 && state.token) showLogin("Your session ended. Please sign in again.");
    throw new ApiError(r.status, problem);
  }
  if (raw) return r;
  if (r.status === 204 || r.status === 202 && !r.headers.get("content-type")) return null;
  return r.json();
}
const get = (path) => request("GET", path);
const qs = (params) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
  return p.toString();
};

// Wraps a click/submit handler: reports success or the API's problem detail.
function act(fn, done) {
  return async (ev) => {
    if (ev?.preventDefault) ev.preventDefault();
    try {
      const message = await fn(ev);
      if (message) say(message);
      if (done) await done();
    } catch (err) {
      say(err.message || String(err), true);
    }
  };
}

// ---- session --------------------------------------------------------------------------------
function showLogin(message = "") {
  state.token = null;
  state.me = null;
  stopStream();
  clearInterval(state.viewTimer);
  $("nav").hidden = true;
  $("who").hidden = true;
  $("view").replaceChildren();
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-email").focus();
}

async function enter() {
  const me = await get("/auth/me");
  if (!me.roles.includes("admin")) {
    await logout();
    showLogin(`The console needs the admin role; ${me.email} does not have it.`);
    return;
  }
  state.me = me;
  $("login").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("who-email").textContent = me.email;
  startStream();
  route();
}

async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  const form = ev.target;
  const r = await fetch(`${API}/auth/login`, {
    method: "POST",
    headers: { ...BROWSER, "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({ email: form.email.value, password: form.password.value }),
  });
  if (!r.ok) {
    let detail = `HTTP ${r.status}`;
    try { detail = (await r.json()).detail; } catch { /* keep */ }
    $("login-error").textContent = detail;
    return;
  }
  form.password.value = "";
  acceptTokens(await r.json());
  await enter().catch((err) => showLogin(err.message));
}

async function logout() {
  await fetch(`${API}/auth/logout`, { method: "POST", headers: BROWSER, credentials: "same-origin" });
  clearTimeout(state.refreshTimer);
  state.token = null;
}

// ---- live event stream (SSE over fetch, so the bearer token can go in a header) -------------
function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

function startStream() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const headers = { ...BROWSER, Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
        if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
        const r = await fetch(`${API}/events/stream`, { headers, signal: controller.signal });
        if (r.status === 401) await refreshToken();
        if (r.status === 403) { showLogin("The console needs the admin role."); return; }
        if (r.ok) await readEvents(r.body);
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let id = null; let data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("id: ")) id = line.slice(4);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (id && data) {
        state.lastEventId = id;
        onEvent(JSON.parse(data));
      }
    }
  }
}

function onEvent(event) {
  if (state.eventsPaused) {
    state.pausedEvents.push(event);
  } else {
    state.events.push(event);
    if (state.events.length > MAX_EVENTS) state.events.shift();
    if (state.view === "events") renderEventList();
  }
  if (state.view === "overview") scheduleOverview();
}

// ---- views ----------------------------------------------------------------------------------
const views = { overview, products, users, jobs, events, audit, plugins };

function route() {
  if (!state.me) return;
  const name = (location.hash.replace(/^#\//, "") || "overview").split("?")[0];
  const view = views[name] ? name : "overview";
  state.view = view;
  clearInterval(state.viewTimer);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${view}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  say("");
  views[view]().catch((err) => say(err.message, true));
}

function mount(title, ...children) {
  document.title = `${title} · Arcana console`;
  $("view").replaceChildren(h("h1", {}, title), ...children);
}

// Overview -------------------------------------------------------------------------------------
let overviewPending = null;
function scheduleOverview() {
  if (overviewPending) return;
  overviewPending = setTimeout(() => { overviewPending = null; if (state.view === "overview") fillOverview(); }, 500);
}

async function overview() {
  mount("Overview", h("div", { id: "overview", class: "grid" }), h("p", { class: "muted" }, "Updates live."));
  await fillOverview();
  state.viewTimer = setInterval(() => fillOverview().catch(() => {}), 5000);
}

async function fillOverview() {
  const o = await get("/admin/overview");
  const stat = (label, value, detail) => h("dl", { class: "card stat" }, h("dt", {}, label), h("dd", {}, String(value), detail ? h("small", {}, detail) : null));
  const products = Object.values(o.products).reduce((a, b) => a + b, 0);
  const depth = Object.entries(o.jobs.depth).map(([k, v]) => `${k} ${v}`).join(", ");
  const grid = $("overview");
  if (!grid) return;
  grid.replaceChildren(
    stat("Users", o.users),
    stat("Products", products, Object.entries(o.products).map(([k, v]) => `${k} ${v}`).join(" · ")),
    stat("Jobs queued", o.jobs.queued, depth || "queue empty"),
    stat("Jobs running / scheduled / retrying", `${o.jobs.running} / ${o.jobs.scheduled} / ${o.jobs.retrying}`),
    stat("Jobs succeeded", o.jobs.succeeded),
    stat("Dead letters", o.dead_letters),
    stat("Events per minute", o.events_per_minute),
    stat("Plugins", `${o.plugins.active} active`, `${o.plugins.disabled} disabled · ${o.plugins.failed} failed`),
  );
}

// Products -------------------------------------------------------------------------------------
const productQuery = { page: 0, size: 20, q: "", category: "", status: "" };

async function products() {
  const search = h("input", { type: "search", name: "q", value: productQuery.q });
  const category = h("input", { type: "text", name: "category", value: productQuery.category });
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: s === productQuery.status }, s)));
  const filters = h("form", { class: "inline", role: "search", "aria-label": "Filter products",
    onsubmit: (ev) => { ev.preventDefault(); Object.assign(productQuery, { page: 0, q: search.value, category: category.value, status: status.value }); fillProducts(); } },
  field("Name contains", search), field("Category", category), field("Status", status),
  h("button", { type: "submit" }, "Filter"),
  h("button", { type: "button", class: "secondary", onclick: act(exportCsv) }, "Export CSV"));
  mount("Products", filters, h("div", { id: "product-list" }), h("h2", { id: "product-form-title" }, "New product"), productForm(null));
  await fillProducts();
}

async function exportCsv() {
  const r = await request("GET", "/products/export", undefined, { raw: true });
  const url = URL.createObjectURL(await r.blob());
  const a = h("a", { href: url, download: "products.csv" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return "Export downloaded.";
}

async function fillProducts() {
  const page = await get(`/products?${qs(productQuery)}`);
  const rows = page.data.map((p) => h("tr", {},
    h("td", {}, p.name), h("td", { class: "num" }, p.price.toFixed ? p.price.toFixed(2) : p.price),
    h("td", { class: "num" }, p.stock), h("td", {}, p.category || "—"), h("td", {}, p.status),
    h("td", {}, h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", "aria-label": `Stock minus one for ${p.name}`, disabled: p.stock === 0,
        onclick: act(() => request("POST", `/products/${p.id}/stock`, { quantity_change: -1 }).then((x) => `Stock of ${x.name} is ${x.stock}.`), fillProducts) }, "−1"),
      h("button", { type: "button", class: "secondary", "aria-label": `Stock plus one for ${p.name}`,
        onclick: act(() => request("POST", `/products/${p.id}/stock`, { quantity_change: 1 }).then((x) => `Stock of ${x.name} is ${x.stock}.`), fillProducts) }, "+1"),
      h("button", { type: "button", class: "secondary", "aria-label": `Edit ${p.name}`, onclick: () => editProduct(p) }, "Edit")))));
  const pager = h("div", { class: "toolbar" },
    h("button", { type: "button", class: "secondary", disabled: productQuery.page === 0, onclick: () => { productQuery.page -= 1; fillProducts(); } }, "Previous page"),
    h("span", {}, `Page ${page.page + 1} of ${Math.max(1, Math.ceil(page.total / page.size))} · ${page.total} products`),
    h("button", { type: "button", class: "secondary", disabled: (page.page + 1) * page.size >= page.total, onclick: () => { productQuery.page += 1; fillProducts(); } }, "Next page"));
  $("product-list")?.replaceChildren(table("Products, newest first", ["Name", "Price", "Stock", "Category", "Status", "Actions"], rows), pager);
}

function productForm(p) {
  const name = h("input", { name: "name", required: true, maxlength: 200, value: p?.name ?? "" });
  const price = h("input", { name: "price", type: "number", min: 0, step: "0.01", required: true, value: p?.price ?? "" });
  const stock = h("input", { name: "stock", type: "number", min: 0, step: 1, value: p?.stock ?? 0 });
  const category = h("input", { name: "category", value: p?.category ?? "" });
  const description = h("input", { name: "description", value: p?.description ?? "" });
  const status = p ? h("select", { name: "status", disabled: p.status === "Archived" },
    STATUSES.map((s) => h("option", { value: s, selected: s === p.status }, s))) : null;
  const submit = async () => {
    const body = { name: name.value, price: Number(price.value), stock: Number(stock.value), category: category.value || null, description: description.value || null };
    if (!p) {
      const created = await request("POST", "/products", body);
      return `Created ${created.name}.`;
    }
    if (status && p.status !== "Archived") body.status = status.value;
    const saved = await request("PATCH", `/products/${p.id}`, body);
    return `Saved ${saved.name}.`;
  };
  return h("form", { id: "product-form", class: "inline card", "aria-labelledby": "product-form-title",
    onsubmit: act(submit, async () => { $("product-form").replaceWith(productForm(null)); $("product-form-title").textContent = "New product"; await fillProducts(); }) },
  field("Name", name), field("Price", price), field("Stock", stock), field("Category", category), field("Description", description),
  status ? field(p.status === "Archived" ? "Status (Archived is final)" : "Status", status) : null,
  h("button", { type: "submit" }, p ? "Save" : "Create"),
  p ? h("button", { type: "button", class: "secondary", onclick: () => { $("product-form").replaceWith(productForm(null)); $("product-form-title").textContent = "New product"; } }, "Cancel") : null);
}

function editProduct(p) {
  $("product-form").replaceWith(productForm(p));
  $("product-form-title").textContent = `Edit ${p.name}`;
  $("product-form").querySelector("input").focus();
}

// Users ----------------------------------------------------------------------------------------
const userQuery = { q: "", page: 0, size: 20 };

async function users() {
  const search = h("input", { type: "search", name: "q", value: userQuery.q });
  mount("Users",
    h("form", { class: "inline", role: "search", "aria-label": "Search users",
      onsubmit: (ev) => { ev.preventDefault(); userQuery.q = search.value; userQuery.page = 0; fillUsers(); } },
    field("Name or email contains", search), h("button", { type: "submit" }, "Search")),
    h("div", { id: "user-list" }), h("div", { id: "user-sessions" }));
  await fillUsers();
}

async function fillUsers() {
  const page = await get(`/admin/users?${qs(userQuery)}`);
  const rows = page.data.map((u) => {
    const admin = u.roles.includes("admin");
    const self = u.id === state.me.id;
    return h("tr", {}, h("td", {}, u.email), h("td", {}, u.name), h("td", {}, u.roles.join(", ")), h("td", {}, fmtTime(u.created_at)),
      h("td", {}, h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", disabled: self && admin, "aria-label": `${admin ? "Revoke" : "Grant"} admin for ${u.email}`,
          onclick: act(() => request(admin ? "DELETE" : "PUT", `/admin/users/${u.id}/roles/admin`).then(() => `${admin ? "Revoked admin from" : "Granted admin to"} ${u.email}.`), fillUsers) },
        admin ? "Revoke admin" : "Grant admin"),
        h("button", { type: "button", class: "secondary", "aria-label": `Sessions of ${u.email}`, onclick: act(() => showSessions(u)) }, "Sessions"),
        h("button", { type: "button", class: "danger", disabled: self, "aria-label": `Delete ${u.email}`,
          onclick: act(async () => {
            if (!window.confirm(`Delete ${u.email} and all their sessions?`)) return "";
            await request("DELETE", `/admin/users/${u.id}`);
            return `Deleted ${u.email}.`;
          }, fillUsers) }, "Delete"))));
  });
  const pager = h("div", { class: "toolbar" },
    h("button", { type: "button", class: "secondary", disabled: userQuery.page === 0, onclick: () => { userQuery.page -= 1; fillUsers(); } }, "Previous page"),
    h("span", {}, `${page.total} users`),
    h("button", { type: "button", class: "secondary", disabled: (page.page + 1) * page.size >= page.total, onclick: () => { userQuery.page += 1; fillUsers(); } }, "Next page"));
  $("user-list")?.replaceChildren(table("Users, newest first", ["Email", "Name", "Roles", "Created", "Actions"], rows), pager);
}

async function showSessions(u) {
  const list = await get(`/admin/users/${u.id}/sessions`);
  const rows = list.data.map((s) => h("tr", {}, h("td", {}, fmtTime(s.created_at)), h("td", {}, fmtTime(s.last_used_at)),
    h("td", {}, s.ip || "—"), h("td", {}, s.user_agent || "—"),
    h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `End session started ${fmtTime(s.created_at)}`,
      onclick: act(() => request("DELETE", `/admin/users/${u.id}/sessions/${s.id}`).then(() => "Session ended."), () => showSessions(u)) }, "End"))));
  $("user-sessions").replaceChildren(h("h2", {}, `Sessions of ${u.email}`),
    table(`Live sessions of ${u.email}`, ["Started", "Last used", "Address", "Client", "Action"], rows));
  return "";
}

// Jobs -----------------------------------------------------------------------------------------
const jobQuery = { status: "dead", page: 0, size: 20 };

async function jobs() {
  const status = h("select", { name: "status", onchange: () => { jobQuery.status = status.value; jobQuery.page = 0; fillJobs(); } },
    h("option", { value: "" }, "all"), JOB_STATUSES.map((s) => h("option", { value: s, selected: s === jobQuery.status }, s)));
  const type = h("select", { name: "job_type" }, h("option", { value: "system.echo" }, "system.echo"), h("option", { value: "system.noop" }, "system.noop"));
  const message = h("input", { name: "message", value: "hello" });
  const failTimes = h("input", { name: "fail_times", type: "number", min: 0, value: 0 });
  const retries = h("input", { name: "max_retries", type: "number", min: 0, max: 100, value: 3 });
  const enqueue = async () => {
    const payload = type.value === "system.echo" ? { message: message.value, fail_times: Number(failTimes.value) } : {};
    const job = await request("POST", "/admin/jobs", { job_type: type.value, payload, max_retries: Number(retries.value) });
    return `Enqueued ${job.job_type} (${job.id}).`;
  };
  mount("Jobs",
    h("form", { class: "inline", "aria-label": "Show jobs", onsubmit: (ev) => { ev.preventDefault(); fillJobs(); } },
      field("Status", status), h("button", { type: "submit", class: "secondary" }, "Refresh")),
    h("div", { id: "job-list" }), h("div", { id: "job-detail" }),
    h("h2", { id: "enqueue-title" }, "Enqueue a job"),
    h("form", { class: "inline card", "aria-labelledby": "enqueue-title", onsubmit: act(enqueue, fillJobs) },
      field("Type", type), field("Message (echo)", message), field("Fail times (echo)", failTimes), field("Max retries", retries),
      h("button", { type: "submit" }, "Enqueue")),
    h("h2", {}, "Periodic schedule"), h("div", { id: "job-schedule" }));
  await Promise.all([fillJobs(), fillSchedule()]);
}

async function fillJobs() {
  const page = await get(`/admin/jobs?${qs(jobQuery)}`);
  const rows = page.data.map((j) => h("tr", {},
    h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `Details of job ${j.id}`, onclick: act(() => showJob(j.id)) }, j.id.slice(0, 8))),
    h("td", {}, j.job_type), h("td", {}, j.status), h("td", { class: "num" }, `${j.retry_count} / ${j.max_retries}`),
    h("td", {}, j.last_error || "—"),
    h("td", {}, j.status === "dead" ? h("button", { type: "button", "aria-label": `Retry job ${j.id}`,
      onclick: act(() => request("POST", `/admin/jobs/${j.id}/retry`).then((x) => `Job ${x.id} is ${x.status} again.`), fillJobs) }, "Retry") : "")));
  $("job-list")?.replaceChildren(table(`Jobs${jobQuery.status ? ` (${jobQuery.status})` : ""}: ${page.total}`, ["Job", "Type", "Status", "Retries", "Last error", "Action"], rows));
}

async function showJob(id) {
  const job = await get(`/admin/jobs/${encodeURIComponent(id)}`);
  $("job-detail").replaceChildren(h("h2", {}, `Job ${job.id}`),
    h("p", {}, `${job.job_type} · ${job.status} · retries ${job.retry_count} of ${job.max_retries}`),
    h("p", {}, "Last error: ", h("strong", {}, job.last_error || "none")),
    h("pre", { tabindex: 0, "aria-label": "Job as JSON" }, JSON.stringify(job, null, 2)));
  return "";
}

async function fillSchedule() {
  const s = await get("/admin/schedule");
  $("job-schedule")?.replaceChildren(table("Periodic jobs", ["Type", "Every", "Next run"],
    s.data.map((p) => h("tr", {}, h("td", {}, p.job_type), h("td", {}, `${p.every_seconds} s`), h("td", {}, fmtTime(p.next_run_at))))));
}

// Events ---------------------------------------------------------------------------------------
async function events() {
  const filter = h("input", { type: "search", name: "event_type", value: state.eventFilter, placeholder: "product.out_of_stock",
    oninput: () => { state.eventFilter = filter.value.trim(); renderEventList(); } });
  const pause = h("button", { type: "button", class: "secondary", "aria-pressed": String(state.eventsPaused), onclick: () => {
    state.eventsPaused = !state.eventsPaused;
    if (!state.eventsPaused) {
      state.events.push(...state.pausedEvents);
      state.pausedEvents = [];
      state.events.splice(0, Math.max(0, state.events.length - MAX_EVENTS));
    }
    pause.setAttribute("aria-pressed", String(state.eventsPaused));
    pause.textContent = state.eventsPaused ? "Resume" : "Pause";
    renderEventList();
  } }, state.eventsPaused ? "Resume" : "Pause");
  mount("Events", h("div", { class: "toolbar" }, field("Type contains", filter), pause, h("span", { id: "event-note", class: "muted" })),
    h("ol", { id: "event-list", class: "events", tabindex: 0, "aria-label": "Live events, newest first" }));
  renderEventList();
}

function renderEventList() {
  const list = $("event-list");
  if (!list) return;
  const shown = state.events.filter((e) => !state.eventFilter || e.event_type.includes(state.eventFilter)).slice(-100).reverse();
  list.replaceChildren(...shown.map((e) => h("li", {}, h("span", { class: "badge" }, e.event_type), " ", fmtTime(e.timestamp), " ", JSON.stringify(e.data))));
  if (!shown.length) list.replaceChildren(h("li", { class: "muted" }, "Waiting for events…"));
  $("event-note").textContent = state.eventsPaused ? `Paused; ${state.pausedEvents.length} new events held.` : "Live.";
}

// Audit log ------------------------------------------------------------------------------------
const auditQuery = { flagged: "true", page: 0, size: 25 };

async function audit() {
  const page = await get(`/admin/audit?${qs(auditQuery)}`);
  const rows = page.data.map((e) => h("tr", {}, h("td", {}, fmtTime(e.timestamp)), h("td", {}, e.event_type), h("td", {}, e.user_id),
    h("td", {}, `${e.action} ${e.resource}`),
    h("td", {}, e.results.map((r) => h("span", { class: `badge ${r.code === 0 ? "good" : "bad"}` }, `${r.plugin}: ${r.code === 1 ? "flag" : r.code}`, " "))),
    h("td", {}, JSON.stringify(e.metadata))));
  const pager = h("div", { class: "toolbar" },
    h("button", { type: "button", class: "secondary", disabled: auditQuery.page === 0, onclick: () => { auditQuery.page -= 1; audit(); } }, "Previous page"),
    h("span", {}, `${page.total} flagged events`),
    h("button", { type: "button", class: "secondary", disabled: (page.page + 1) * page.size >= page.total, onclick: () => { auditQuery.page += 1; audit(); } }, "Next page"));
  mount("Audit log", table("Flagged audit events, newest first, with every plugin's result", ["When", "Event", "User", "Action", "Plugin results", "Metadata"], rows), pager);
}

// Plugins --------------------------------------------------------------------------------------
async function plugins() {
  mount("Plugins", h("div", { class: "toolbar" }, h("button", { type: "button", id: "reload-plugins",
    onclick: act(async () => { const r = await request("POST", "/admin/plugins/reload"); renderPlugins(r.plugins); return `Reloaded ${r.plugins.length} plugins.`; }) }, "Reload plugins")),
  h("div", { id: "plugin-list" }));
  renderPlugins((await get("/admin/plugins")).plugins);
}

function renderPlugins(list) {
  const rows = list.map((p) => h("tr", {}, h("td", {}, p.name), h("td", {}, h("span", { class: `badge ${p.state === "active" ? "good" : "bad"}` }, p.state)),
    h("td", { class: "num" }, p.calls), h("td", { class: "num" }, p.flags), h("td", { class: "num" }, p.errors),
    h("td", { class: "num" }, p.p50_us == null ? "—" : `${Math.round(p.p50_us)} / ${Math.round(p.p99_us)}`),
    h("td", {}, p.version ?? "—"), h("td", {}, p.error || "")));
  $("plugin-list")?.replaceChildren(table("Loaded plugins", ["Name", "State", "Calls", "Flags", "Errors", "p50 / p99 µs", "Version", "Problem"], rows));
}

// ---- start ------------------------------------------------------------------------------------
$("login-form").addEventListener("submit", (ev) => login(ev).catch((err) => { $("login-error").textContent = err.message; }));
$("logout").addEventListener("click", async () => { await logout(); showLogin("Signed out."); });
window.addEventListener("hashchange", () => { route(); $("main").focus(); });

(async () => {
  try {
    if (await refreshToken()) { await enter(); return; }
  } catch { /* fall through to the form */ }
  showLogin();
})();
