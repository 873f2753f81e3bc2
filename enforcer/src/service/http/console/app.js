// The console's pages. Each reads the JSON API (docs/http-api.md) with the token the
// operator typed, kept for this tab only (sessionStorage). Everything from the API is put
// into the page with textContent: paths and names in the log are anyone's bytes.
"use strict";

const main = document.getElementById("main");

// h("td", {class: "deny"}, "text", child…): an element; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c !== undefined && c !== null) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// Replaces the page's content; parts may be nested lists, and null for "nothing".
function show(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined));
}

function authHeaders() {
  const token = sessionStorage.getItem("enforcer-token");
  return token ? { Authorization: "Bearer " + token } : {};
}

class ApiError extends Error {}

// GET an API path; a 401 shows the token form and throws.
async function api(path, raw) {
  const res = await fetch("/api/v1/" + path, { headers: authHeaders() });
  if (res.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new ApiError("this agent needs its API token: enter it above (the token in [http] token_file)");
  }
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { message = (await res.json()).error || message; } catch { /* not JSON */ }
    throw new ApiError(message);
  }
  return raw ? res.text() : res.json();
}

const failure = (e) => h("p", { class: "error" }, String(e.message || e));
const decisionCell = (d) => h("span", { class: d }, d);
const execRef = (d) => `${d.boot_id}:${d.exec_id}`;
const lineageLink = (d) => h("a", { href: "/lineage/" + execRef(d) }, "exec " + d.exec_id);
const proofLink = (d) => h("a", { href: "/proof?exec=" + encodeURIComponent(execRef(d)) }, "proof");

function table(id, headers, rows) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

// Overview: whether the agent enforces and why not, the scopes and what they grant.
async function overview() {
  let status, listing, readiness;
  try {
    [status, listing] = await Promise.all([api("status"), api("authorizations")]);
    const r = await fetch("/readyz");
    readiness = await r.json();
  } catch (e) {
    return show(h("h1", {}, "Overview"), failure(e));
  }
  const problems = (readiness.checks || []).filter((c) => !c.ok);
  const why = [];
  if (status.agent.last_error) why.push("last error: " + status.agent.last_error);
  if (status.agent.unsigned_policy) why.push("running the unsigned development policy " + status.agent.unsigned_policy);
  for (const c of problems) why.push(`${c.name}: ${c.problem || "failed"}`);
  const banner = status.enforcing
    ? h("div", { id: "enforcing", class: "banner ok" }, "Enforcing", problems.length ? " (not ready)" : "")
    : h("div", { id: "enforcing", class: "banner bad" }, "Not enforcing");
  const scopes = status.scopes.map((s) => h("tr", { "data-scope": s.path },
    h("td", {}, h("code", {}, s.path)),
    h("td", {}, s.mode, s.mode !== s.configured_mode ? ` (configured ${s.configured_mode})` : "",
      s.break_glass_until ? h("div", { class: "muted" }, "break-glass until " + s.break_glass_until) : null),
    h("td", { class: "grants" }, String(s.grants)),
    h("td", {}, s.denies_everything
      ? h("div", { class: "deny" }, "denies everything", h("ul", {}, s.why.map((w) => h("li", {}, w))))
      : h("span", { class: "muted" }, "—")),
    h("td", {}, h("a", { href: "/decisions?scope=" + encodeURIComponent(s.path) }, "decisions"))));
  const bundles = listing.bundles.map((b) => h("tr", { "data-bundle": b.bundle_id },
    h("td", {}, b.bundle_id, h("div", { class: "muted mono" }, b.id)),
    h("td", {}, b.issuer), h("td", {}, String(b.serial)),
    h("td", {}, b.scopes.map((s) => h("div", {}, h("code", {}, s)))),
    h("td", { class: "grants" }, String(b.live_grants)),
    h("td", {}, b.not_after), h("td", {}, b.on_revoke)));
  const glass = listing.break_glass.map((g) => h("tr", {},
    h("td", {}, g.issuer), h("td", {}, g.scopes.join(", ")), h("td", {}, g.reason), h("td", {}, g.not_after)));
  const refused = listing.refused.map((r) => h("tr", {}, h("td", {}, h("code", {}, r.file)), h("td", {}, r.reason)));
  show(
    h("h1", {}, "Overview"), banner,
    why.length ? h("ul", { id: "why" }, why.map((w) => h("li", {}, w))) : null,
    h("p", { class: "muted" }, `agent pid ${status.agent.pid}, started ${status.agent.started}`,
      status.agent.last_reconcile ? `, last reconcile ${status.agent.last_reconcile}` : "",
      status.agent.next_deadline ? `, next change by itself at ${status.agent.next_deadline}` : "",
      `; ${status.dropped_events} decision(s) lost to a full ring buffer`),
    h("h2", {}, "Scopes"),
    table("scopes", ["scope", "mode", "grants", "why it denies everything", ""], scopes),
    h("h2", {}, "Bundles in force"),
    table("bundles", ["bundle", "issuer", "serial", "scopes", "live grants", "expires", "on revoke"], bundles),
    glass.length ? [h("h2", {}, "Break-glass"), table("break-glass", ["issuer", "scopes", "reason", "until"], glass)] : [],
    refused.length ? [h("h2", {}, "Refused artifacts"), table("refused", ["file", "reason"], refused)] : []);
}

function decisionRow(record) {
  // A record is flat: its body's members sit beside seq and time.
  const d = record;
  return h("tr", { "data-seq": record.seq, "data-exec": d.exec_id },
    h("td", { class: "mono" }, record.time), h("td", {}, decisionCell(d.decision)),
    h("td", {}, d.reason), h("td", {}, h("code", {}, d.scope || "?")),
    h("td", {}, h("code", {}, d.path)), h("td", {}, String(d.uid)),
    h("td", {}, lineageLink(d), " · ", proofLink(d)));
}

// Server-Sent Events through fetch, not EventSource: EventSource cannot send the token.
async function follow(query, onRecord, onState, signal) {
  const res = await fetch("/api/v1/decisions/stream" + query, { headers: authHeaders(), signal });
  if (!res.ok) throw new ApiError(`the stream was refused: ${res.status}`);
  onState("live");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) onRecord(JSON.parse(data));
    }
  }
  onState("ended: reload to follow again (the agent stopped, or this tab fell behind)");
}

let streaming = null;

// Live decisions: the newest page, then the stream, both under the same filter.
async function decisions() {
  const params = new URLSearchParams(location.search);
  const scope = h("input", { id: "filter-scope", type: "text", placeholder: "any scope", value: params.get("scope") || "" });
  const decision = h("select", { id: "filter-decision" },
    ["", "allow", "deny", "would-deny"].map((v) => h("option", { value: v, selected: v === (params.get("decision") || "") }, v || "any")));
  const state = h("span", { id: "stream-state", class: "muted" }, "connecting…");
  const body = h("tbody", {});
  const apply = () => {
    const q = new URLSearchParams();
    if (scope.value) q.set("scope", scope.value);
    if (decision.value) q.set("decision", decision.value);
    history.replaceState(null, "", "/decisions" + (q.toString() ? "?" + q : ""));
    decisions();
  };
  decision.addEventListener("change", apply);
  scope.addEventListener("change", apply);
  show(h("h1", {}, "Live decisions"),
    h("div", { class: "filters" }, h("label", {}, "scope", scope), h("label", {}, "decision", decision), state),
    h("table", { id: "decisions" },
      h("thead", {}, h("tr", {}, ["time", "decision", "reason", "scope", "path", "uid", ""].map((t) => h("th", {}, t)))),
      body));
  if (streaming) streaming.abort();
  streaming = new AbortController();
  const q = new URLSearchParams();
  if (scope.value) q.set("scope", scope.value);
  if (decision.value) q.set("decision", decision.value);
  const query = q.toString() ? "?" + q : "";
  const seen = new Set();
  const add = (record, newest) => {
    if (seen.has(record.seq)) return;
    seen.add(record.seq);
    const row = decisionRow(record);
    if (newest) body.prepend(row); else body.append(row);
  };
  const stream = follow(query, (r) => add(r, true), (s) => { state.textContent = s; }, streaming.signal);
  stream.catch((e) => { if (e.name !== "AbortError") state.textContent = String(e.message); });
  try {
    const page = await api("decisions" + (query ? query + "&" : "?") + "limit=50");
    for (const r of page.decisions) add(r, false);
  } catch (e) {
    main.append(failure(e));
  }
}

// One exec's node in the tree: what ran, the decision, and the authorization it ran under.
function execNode(step, focus) {
  if (step.step === "missing") {
    return h("span", { class: "node muted" }, `exec ${step.exec_id}: not in the log (before it began, or lost)`);
  }
  const d = step.decision;
  return h("span", { class: "node" + (focus ? " focus" : ""), "data-exec": d.exec_id },
    h("code", {}, d.path), " ", decisionCell(d.decision), ` (${d.reason}) `,
    h("span", { class: "muted" }, `pid ${d.pid} uid ${d.uid} · exec ${d.exec_id}`),
    h("div", { class: "muted" },
      d.auth_id ? `authorized by ${d.auth_id}… serial ${d.auth_serial}${d.grant ? `, grant “${d.grant}”` : ""}` : "no authorization",
      " · ", h("a", { href: "/lineage/" + execRef(d) }, "focus"), " · ", proofLink(d)));
}

// Lineage explorer: the exec's ancestors down to it, then every exec started under it.
async function lineage() {
  const exec = decodeURIComponent(location.pathname.slice("/lineage/".length));
  const input = h("input", { id: "exec", type: "text", placeholder: "boot_id:exec_id", value: exec });
  const go = () => { location.href = "/lineage/" + input.value.trim(); };
  input.addEventListener("change", go);
  const header = [h("h1", {}, "Lineage"), h("p", {}, h("label", {}, "exec ", input),
    h("span", { class: "muted" }, " or pick one in ", h("a", { href: "/decisions" }, "Live decisions")))];
  if (!location.pathname.startsWith("/lineage/") || !exec) return show(...header);
  let family;
  try {
    family = await api("lineage/" + encodeURIComponent(exec).replace("%3A", ":"));
  } catch (e) {
    return show(...header, failure(e));
  }
  // Steps run from the exec up to its oldest known ancestor: nest them root first.
  const chain = family.steps.slice().reverse();
  const children = new Map();
  for (const s of family.descendants) {
    const parent = s.decision.parent_exec_id;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const subtree = (step) => {
    const kids = step.step === "logged" ? children.get(step.decision.exec_id) || [] : [];
    return h("li", {}, execNode(step, false), kids.length ? h("ul", {}, kids.map(subtree)) : null);
  };
  let tree = null;
  for (let i = chain.length - 1; i >= 0; i--) {
    const focus = i === chain.length - 1;
    const below = focus
      ? (children.get(chain[i].decision?.exec_id) || []).map(subtree)
      : [tree];
    tree = h("li", {}, execNode(chain[i], focus), below.length ? h("ul", {}, below) : null);
  }
  show(...header,
    family.other_boots.length ? h("p", { class: "muted" }, "the same exec id also occurs in boots " + family.other_boots.join(", ")) : null,
    h("ul", { id: "tree", class: "tree" }, tree),
    family.descendants_truncated ? h("p", { class: "muted" }, "more descendants exist than shown") : null);
}

function describe(facts) {
  const r = facts.record || {};
  const rows = [["origin", facts.origin], ["tree size", facts.treeSize], ["root", facts.root],
    ["record", r.seq !== undefined ? `seq ${r.seq}, ${r.kind}, written ${r.time}` : undefined]];
  if (r.kind === "decision") {
    rows.push(["decision", `${r.decision} (${r.reason}, ${r.hook})`], ["path", r.path], ["sha256", r.sha256],
      ["scope", r.scope], ["exec", `${r.boot_id}:${r.exec_id}, pid ${r.pid}, uid ${r.uid}`],
      ["authorization", r.auth_id ? `${r.auth_id}… serial ${r.auth_serial}${r.grant ? `, grant “${r.grant}”` : ""}` : "none cited"]);
  }
  return h("dl", { id: "facts", class: "facts" },
    rows.filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, String(v))]));
}

// Proof viewer: fetch or load a proof, and check it here with WebCrypto.
async function proof() {
  const params = new URLSearchParams(location.search);
  const text = h("textarea", { id: "proof-text", spellcheck: "false", placeholder: "a proof file (enforcer audit prove), or pick a decision" });
  const key = h("input", { id: "host-key", type: "text", placeholder: "host key: vkey (origin+id+key) or base64 public key" });
  const file = h("input", { id: "proof-file", type: "file", accept: ".json,application/json" });
  const verdict = h("div", { id: "verdict" });
  const result = h("div", { id: "result" });
  const note = h("p", { class: "muted" });
  const check = async () => {
    verdict.replaceChildren();
    result.replaceChildren();
    verdict.removeAttribute("data-outcome");
    const outcome = await EnforcerProof.verify(text.value, key.value);
    verdict.dataset.outcome = outcome.ok ? "proven" : "refused";
    verdict.dataset.code = outcome.code || "";
    verdict.className = "banner " + (outcome.ok ? "ok" : "bad");
    verdict.append(outcome.ok
      ? "PROVEN: this record is in the host's log under a checkpoint signed by the host key"
      : `REFUSED (${outcome.code}): ${outcome.message}`);
    result.append(h("ol", { id: "steps", class: "steps" },
      outcome.steps.map((s) => h("li", { class: s.status }, h("strong", {}, s.name), ": ", s.detail))),
    outcome.ok ? describe(outcome.facts) : []);
  };
  file.addEventListener("change", async () => { if (file.files[0]) { text.value = await file.files[0].text(); check(); } });
  const pick = h("select", { id: "pick" }, h("option", { value: "" }, "pick a recent decision…"));
  pick.addEventListener("change", () => { if (pick.value) location.href = "/proof?seq=" + pick.value; });
  show(h("h1", {}, "Proof viewer"),
    h("p", {}, "A proof shows that one record is in this host's audit log under a checkpoint the host key signed. ",
      "It is checked here, in your browser: SHA3-512 of the record, the RFC 6962 inclusion proof to the checkpoint's root, ",
      "and the checkpoint's Ed25519 signature. The authorizing artifact needs your trust store: ",
      h("code", {}, "enforcer proof verify"), "."),
    h("p", {}, h("label", {}, "host key ", key)), note,
    h("p", {}, pick, " or ", h("label", {}, "load a file ", file), " or paste one:"), text,
    h("p", {}, h("button", { id: "verify", type: "button", on: { click: check } }, "Verify")),
    verdict, result);
  try {
    key.value = (await api("host-key")).vkey;
    note.textContent = "This key came from the agent itself: it shows the proof is consistent with this agent's log. " +
      "Against a host you do not trust, paste the key its owner gave you.";
  } catch (e) {
    note.textContent = "No host key from the agent (" + e.message + "): paste the one its owner gave you.";
  }
  try {
    for (const r of (await api("decisions?limit=20")).decisions) {
      pick.append(h("option", { value: r.seq, selected: String(r.seq) === params.get("seq") },
        `seq ${r.seq}: ${r.decision} ${r.path} (exec ${r.exec_id}, ${r.time})`));
    }
  } catch { /* the page still takes a file or a pasted proof */ }
  const exec = params.get("exec");
  const seq = params.get("seq");
  if (exec || seq) {
    try {
      const fetched = await api(exec ? "proof/" + exec : "proof?seq=" + encodeURIComponent(seq), true);
      // Indented for reading: the checks read the members, not the file's layout.
      text.value = JSON.stringify(JSON.parse(fetched), null, 2);
      await check();
    } catch (e) {
      result.append(failure(e));
    }
  }
}

const pages = { overview, decisions, lineage, proof };

function route() {
  const name = location.pathname === "/" ? "overview" : location.pathname.split("/")[1];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === name);
  const page = pages[name] || overview;
  document.body.dataset.ready = "";
  Promise.resolve(page()).finally(() => { document.body.dataset.ready = name; });
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("enforcer-token", document.getElementById("token").value);
  document.getElementById("token-form").hidden = true;
  route();
});

route();
