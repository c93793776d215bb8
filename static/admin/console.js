/*
 * The operator console: one page over the admin API, for the admins who log in on it.
 *
 * The page holds no data of its own. Everything comes from /api/v1/admin/* with the
 * token of the admin who logged in here (kept in memory and this tab's
 * sessionStorage, never in the address); a 401 brings the login form back and a 403
 * shows a refusal, so nobody else ever sees data. Every text from the server is put
 * into the page as text (textContent), never as HTML: documents, questions, answers
 * and comments are written by visitors and other admins.
 *
 * Pages, by the address's fragment: #dashboard, #conversations, #unanswered,
 * #disliked, #knowledge, #audit.
 */

const TOKEN_KEY = "chat-admin:token";
const LIST_LIMIT = 100;
const EXCERPT_CHARS = 400;
const PAGES = ["dashboard", "conversations", "unanswered", "disliked", "knowledge", "audit"];

const $ = (id) => document.getElementById(id);

/** An element with a class, text and attributes; children appended in order. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  for (const [name, value] of Object.entries(props.attrs || {})) node.setAttribute(name, value);
  for (const child of children) if (child) node.append(child);
  return node;
}

function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

function excerpt(text, max = EXCERPT_CHARS) {
  const s = String(text ?? "");
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

// ---- the token: memory first, this tab's sessionStorage when the browser allows -----

const session = { token: null, email: null, renewal: null };
const RENEW_BEFORE_S = 120;

function readToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Keep `token`, or forget it (null). With `expiresIn` (seconds), renew it before then. */
function keepToken(token, expiresIn = null) {
  session.token = token;
  clearTimeout(session.renewal);
  if (token && expiresIn) {
    const delay = Math.max(expiresIn - RENEW_BEFORE_S, 5) * 1000;
    session.renewal = setTimeout(renew, delay);
  }
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage refused: the token lives in memory until the tab closes
  }
}

/** A fresh token for the one kept (POST /api/v1/auth/refresh), so an open console stays
 * logged in; a 401 (expired, revoked) brings the login form back. */
async function renew() {
  try {
    const body = await api("POST", "/api/v1/auth/refresh");
    keepToken(body.access_token, body.expires_in);
  } catch (error) {
    failed(error);
  }
}

// ---- REST ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function detailText(data, status) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => (e && (e.msg || e.message)) || JSON.stringify(e)).join("; ");
  }
  return `The server answered ${status}.`;
}

/** One call to the API; a 401 signs the console out, a 403 shows the refusal. */
async function api(method, path, body, { quiet = [] } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "The server could not be reached; try again.");
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (resp.ok) return data;
  const error = new ApiError(resp.status, detailText(data, resp.status));
  if (!quiet.includes(resp.status)) {
    if (resp.status === 401) signOut("Your session has ended: log in again.");
    else if (resp.status === 403) refuse(error.message);
  }
  throw error;
}

function say(text) {
  $("status").textContent = text || "";
}

/** Report an error that has not already changed the view (401 and 403 have). */
function failed(error, where = "status") {
  if (error.status === 401 || error.status === 403) return;
  if (where === "status") say(error.message);
  else $(where).textContent = error.message;
}

// ---- views: login, refusal, pages -------------------------------------------------------

function showOnly(id) {
  for (const section of document.querySelectorAll("#login, #refused, .page")) {
    section.hidden = section.id !== id;
  }
  const signedIn = id.startsWith("page-");
  $("nav").hidden = !signedIn;
  $("logout").hidden = !signedIn && id !== "refused";
  $("who").hidden = !session.email;
  $("who").textContent = session.email ? `Signed in as ${session.email}` : "";
}

function clearData() {
  for (const id of [
    "stats",
    "purge",
    "conversation-list",
    "conversation-messages",
    "unanswered-list",
    "disliked-list",
    "doc-list",
    "try-results",
    "audit-list",
  ]) {
    $(id).replaceChildren();
  }
  $("conversation").hidden = true;
  knowledge.lastTry = null;
}

function signOut(message) {
  keepToken(null);
  session.email = null;
  clearData();
  showOnly("login");
  say(message || "");
  $("login-password").value = "";
}

function refuse(detail) {
  keepToken(null);
  clearData();
  $("refused-text").textContent =
    `This account may not use the console: ${detail || "it is not an administrator."}`;
  showOnly("refused");
  session.email = null;
  say("");
}

async function logIn(event) {
  event.preventDefault();
  const email = $("login-email").value.trim();
  const password = $("login-password").value;
  $("login-error").textContent = "";
  if (!email || !password) {
    $("login-error").textContent = "Enter the email and the password.";
    return;
  }
  try {
    const body = await api("POST", "/api/v1/auth/login", { email, password }, { quiet: [401] });
    session.token = body.access_token; // in memory only until the server says "admin"
    await api("GET", "/api/v1/admin/stats");
    keepToken(body.access_token, body.expires_in);
    session.email = email;
    $("login-password").value = "";
    await route();
  } catch (error) {
    session.token = null;
    if (error.status === 403) return; // the refusal is on screen
    $("login-error").textContent =
      error.status === 401 ? "Wrong email or password." : error.message;
  }
}

async function start() {
  $("login-form").addEventListener("submit", logIn);
  $("logout").addEventListener("click", () => signOut("You are logged out."));
  $("refused-again").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", () => route());
  setUpDashboard();
  setUpConversations();
  setUpKnowledge();
  session.token = readToken();
  if (!session.token) {
    showOnly("login");
    return;
  }
  try {
    await renew(); // a kept token's expiry is not known: a fresh one is
    if (!session.token) return;
    const me = await api("GET", "/api/v1/auth/me");
    session.email = me.email;
    await route();
  } catch (error) {
    failed(error);
  }
}

function currentPage() {
  const name = location.hash.slice(1);
  return PAGES.includes(name) ? name : "dashboard";
}

async function route() {
  if (!session.token) {
    showOnly("login");
    return;
  }
  const name = currentPage();
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  say("");
  showOnly(`page-${name}`);
  try {
    await RENDER[name]();
  } catch (error) {
    failed(error);
  }
}

// ---- dashboard ------------------------------------------------------------------------

function facts(list, pairs) {
  list.replaceChildren(
    ...pairs.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]),
  );
}

function ms(value) {
  if (value === null || value === undefined) return "no reply yet";
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
}

function runText(run) {
  if (!run) return "none yet";
  const what = run.status === "ok" ? `deleted ${run.deleted} messages` : run.status;
  return `${when(run.started_at)}: ${what}${run.error ? ` (${run.error})` : ""}`;
}

async function renderDashboard() {
  const [stats, purge] = await Promise.all([
    api("GET", "/api/v1/admin/stats"),
    api("GET", "/api/v1/admin/purge"),
  ]);
  const firstToken = stats.first_token_ms || {};
  facts($("stats"), [
    ["Open connections (this instance)", stats.connections],
    ["Messages", stats.messages_24h],
    ["Unanswered questions", stats.unanswered_24h],
    ["Answers liked", stats.feedback_24h.up],
    ["Answers disliked", stats.feedback_24h.down],
    ["First token, median (p50)", ms(firstToken.p50)],
    ["First token, p99", ms(firstToken.p99)],
    ["Users", stats.users],
  ]);
  facts($("purge"), [
    ["Last run (this instance)", runText(purge.last_run)],
    ["Last successful run", runText(purge.last_ok)],
    ["Next run", purge.next_run ? when(purge.next_run) : "not scheduled"],
    ["Schedule (UTC)", purge.schedule],
    ["Retention", `${purge.retention_days} days`],
  ]);
}

function setUpDashboard() {
  $("purge-run").addEventListener("click", async () => {
    const button = $("purge-run");
    button.disabled = true;
    $("purge-result").textContent = "Purging…";
    try {
      const run = await api("POST", "/api/v1/admin/purge");
      $("purge-result").textContent =
        run.status === "ok"
          ? `Purge done: ${run.deleted} messages and ${run.deleted_other} other rows deleted.`
          : `Purge ${run.status}${run.error ? `: ${run.error}` : " (another instance is running it)"}.`;
      await renderDashboard();
    } catch (error) {
      failed(error, "purge-result");
    } finally {
      button.disabled = false;
    }
  });
}

// ---- conversations ---------------------------------------------------------------------

function userName(user) {
  if (!user) return "unknown user";
  if (user.email) return user.email;
  return user.is_guest ? `guest #${user.id}` : `user #${user.id}`;
}

function sourceList(sources) {
  if (!sources || !sources.length) return el("p", { class: "note", text: "No source." });
  return el(
    "ul",
    { class: "sources", attrs: { "aria-label": "Sources" } },
    ...sources.map((s) =>
      el(
        "li",
        {},
        el("span", { class: "topic", text: s.topic }),
        el("span", { class: "meta", text: ` (${s.id}) score ${s.score}` }),
      ),
    ),
  );
}

function feedbackText(feedback) {
  if (!feedback) return null;
  const rating = typeof feedback === "string" ? feedback : feedback.rating;
  const comment = typeof feedback === "object" ? feedback.comment : null;
  const word = rating === "up" ? "liked" : rating === "down" ? "disliked" : String(rating);
  return `The visitor ${word} this answer${comment ? `: “${comment}”` : "."}`;
}

let conversationToOpen = null; // what another page asked this one to show

async function renderConversations() {
  $("conversation").hidden = true;
  await searchConversations();
  if (conversationToOpen !== null) {
    const id = conversationToOpen;
    conversationToOpen = null;
    await openConversation(id);
  }
}

function showConversation(id) {
  conversationToOpen = id;
  if (location.hash === "#conversations") route();
  else location.hash = "#conversations";
}

async function searchConversations() {
  const params = new URLSearchParams({ limit: String(LIST_LIMIT) });
  const q = $("search-q").value.trim();
  const user = $("search-user").value.trim();
  if (q) params.set("q", q);
  if (user) params.set("user", user);
  const list = $("conversation-list");
  const empty = $("conversations-empty");
  let rows;
  try {
    rows = await api("GET", `/api/v1/admin/conversations?${params}`, undefined, { quiet: [404] });
  } catch (error) {
    list.replaceChildren();
    if (error.status === 404) {
      $("conversation-search").hidden = true;
      empty.textContent = "Conversations are not available on this server yet.";
      empty.hidden = false;
      return;
    }
    if (error.status === 401 || error.status === 403) return;
    empty.textContent = error.message;
    empty.hidden = false;
    return;
  }
  $("conversation-search").hidden = false;
  empty.hidden = rows.length > 0;
  empty.textContent = "No conversation matches.";
  list.replaceChildren(
    ...rows.map((c) => {
      const open = el("button", {
        class: "link",
        text: c.title || "Untitled conversation",
        attrs: { type: "button" },
      });
      open.addEventListener("click", () => openConversation(c.id));
      const downs = c.down_votes ? `, ${c.down_votes} disliked` : "";
      return el(
        "li",
        { class: "item" },
        el("h2", { class: "item-title" }, open),
        el("p", {
          class: "meta",
          text: `${userName(c.user)} · ${c.messages} messages${downs} · ${when(c.updated_at)}`,
        }),
      );
    }),
  );
}

async function openConversation(id) {
  let conv;
  try {
    conv = await api("GET", `/api/v1/admin/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    failed(error);
    return;
  }
  $("conversation-title").textContent = conv.title || "Untitled conversation";
  $("conversation-user").textContent = `With ${userName(conv.user)}`;
  $("conversation-messages").replaceChildren(
    ...(conv.messages || []).map((m) => {
      const mine = m.is_user_message;
      const item = el(
        "li",
        { class: mine ? "msg question" : "msg answer" },
        el("p", { class: "who-said", text: mine ? "Visitor" : "Answer" }),
        el("p", { class: "text", text: m.message }),
        el("p", { class: "meta", text: when(m.timestamp) }),
      );
      if (!mine) {
        item.append(sourceList(m.sources));
        const rated = feedbackText(m.feedback);
        if (rated) item.append(el("p", { class: "rating", text: rated }));
      }
      return item;
    }),
  );
  $("conversation").hidden = false;
  $("conversation").scrollIntoView({ block: "start" });
}

function setUpConversations() {
  $("conversation-search").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("conversation").hidden = true;
    await searchConversations();
  });
}

// ---- unanswered and disliked -------------------------------------------------------------

/** A list page: the rows at `path`, one item each, or the page's "nothing" note. */
async function fillList(name, path, item) {
  const rows = await api("GET", path);
  $(`${name}-empty`).hidden = rows.length > 0;
  $(`${name}-list`).replaceChildren(...rows.map(item));
}

async function renderUnanswered() {
  await fillList(
    "unanswered",
    `/api/v1/admin/unanswered?limit=${LIST_LIMIT}`,
    (row) => {
      const write = el("button", {
        class: "secondary",
        text: "Write the missing document",
        attrs: { type: "button" },
      });
      write.addEventListener("click", () => draftFor(row.question));
      const buttons = el("div", { class: "buttons" }, write);
      if (row.conversation_id !== null && row.conversation_id !== undefined) {
        const read = el("button", {
          class: "quiet",
          text: "Read the conversation",
          attrs: { type: "button" },
        });
        read.addEventListener("click", () => showConversation(row.conversation_id));
        buttons.append(read);
      }
      const times = row.count === 1 ? "once" : `${row.count} times`;
      return el(
        "li",
        { class: "item" },
        el("p", { class: "text", text: row.question }),
        el("p", { class: "meta", text: `Asked ${times}, last ${when(row.last_asked)}` }),
        buttons,
      );
    },
  );
}

async function renderDisliked() {
  await fillList(
    "disliked",
    `/api/v1/admin/feedback?rating=down&limit=${LIST_LIMIT}`,
    (row) =>
      el(
        "li",
        { class: "item" },
        el("h2", { class: "label", text: "Question" }),
        el("p", { class: "text", text: row.question ?? "(deleted)" }),
        el("h2", { class: "label", text: "Answer" }),
        el("p", { class: "text", text: row.reply }),
        el("h2", { class: "label", text: "Sources" }),
        sourceList(row.sources),
        el("h2", { class: "label", text: "Comment" }),
        el("p", { class: "text", text: row.comment || "No comment." }),
        el("p", { class: "meta", text: `${userName(row.user)} · ${when(row.at)}` }),
      ),
  );
}

// ---- knowledge base ----------------------------------------------------------------------

const DOCS = "/api/v1/admin/documents";
const knowledge = {
  editing: null, // the id of the document in the form, when editing one
  draft: null, // what the unanswered page asked the form to hold
  lastTry: null, // {question, passages}: the newest "try a question"
};

function draftFor(question) {
  knowledge.draft = { topic: question.slice(0, 200), question };
  if (location.hash === "#knowledge") route();
  else location.hash = "#knowledge";
}

function resetForm() {
  knowledge.editing = null;
  $("doc-form").reset();
  $("doc-id").readOnly = false;
  $("doc-form-heading").textContent = "Add a document";
  $("doc-save").textContent = "Add the document";
  $("doc-cancel").hidden = true;
  $("doc-error").textContent = "";
}

function editDocument(doc) {
  resetForm();
  knowledge.editing = doc.id;
  $("doc-id").value = doc.id;
  $("doc-id").readOnly = true;
  $("doc-topic").value = doc.topic;
  $("doc-content").value = doc.content;
  $("doc-form-heading").textContent = `Edit “${doc.topic}”`;
  $("doc-save").textContent = "Save the changes";
  $("doc-cancel").hidden = false;
  $("doc-topic").focus();
}

async function renderKnowledge() {
  await fillList("doc", DOCS, documentItem);
  if (knowledge.draft) {
    const { topic, question } = knowledge.draft;
    knowledge.draft = null;
    resetForm();
    $("doc-topic").value = topic;
    $("try-question").value = question;
    $("doc-content").focus();
    say(`Write the document that answers “${excerpt(question, 80)}”.`);
  }
}

function documentItem(doc) {
  const edit = el("button", {
    class: "secondary",
    text: "Edit",
    attrs: { type: "button", "aria-label": `Edit ${doc.topic}` },
  });
  const remove = el("button", {
    class: "danger",
    text: "Delete",
    attrs: { type: "button", "aria-label": `Delete ${doc.topic}` },
  });
  const buttons = el("div", { class: "buttons" }, edit, remove);
  edit.addEventListener("click", () => editDocument(doc));
  remove.addEventListener("click", () => {
    const sure = el("button", {
      class: "danger",
      text: "Yes, delete it",
      attrs: { type: "button" },
    });
    const keep = el("button", { class: "quiet", text: "Keep it", attrs: { type: "button" } });
    const question = el("p", { class: "confirm", text: `Delete “${doc.topic}” for good?` });
    sure.addEventListener("click", () => deleteDocument(doc));
    keep.addEventListener("click", () => {
      question.remove();
      buttons.replaceChildren(edit, remove);
      remove.focus();
    });
    buttons.replaceChildren(sure, keep);
    buttons.before(question);
    keep.focus();
  });
  return el(
    "li",
    { class: "item doc", attrs: { "data-id": doc.id } },
    el("h3", { class: "item-title", text: doc.topic }),
    el("p", { class: "meta", text: `${doc.id} · updated ${when(doc.updated_at)}` }),
    el("p", { class: "text", text: excerpt(doc.content) }),
    buttons,
  );
}

async function saveDocument(event) {
  event.preventDefault();
  $("doc-error").textContent = "";
  const id = $("doc-id").value.trim();
  const body = { topic: $("doc-topic").value, content: $("doc-content").value };
  const editing = knowledge.editing;
  try {
    let saved;
    if (editing) {
      saved = await api("PUT", `${DOCS}/${encodeURIComponent(editing)}`, body);
    } else {
      if (id) body.id = id;
      saved = await api("POST", DOCS, body);
    }
    resetForm();
    say(`${editing ? "Saved" : "Added"} “${saved.topic}” (${saved.id}).`);
    await renderKnowledge();
    await retryAfter(`${editing ? "editing" : "adding"} “${saved.topic}”`);
  } catch (error) {
    failed(error, "doc-error");
  }
}

async function deleteDocument(doc) {
  try {
    await api("DELETE", `${DOCS}/${encodeURIComponent(doc.id)}`);
    if (knowledge.editing === doc.id) resetForm();
    say(`Deleted “${doc.topic}” (${doc.id}).`);
    await renderKnowledge();
    await retryAfter(`deleting “${doc.topic}”`);
  } catch (error) {
    failed(error);
  }
}

/** After a change, the question tried last is tried again: before and after, side by side. */
async function retryAfter(change) {
  if (knowledge.lastTry) await tryQuestion(knowledge.lastTry.question, change);
}

async function tryQuestion(question, change = null) {
  const { passages } = await api("POST", "/api/v1/admin/retrieve", { question });
  const before =
    change && knowledge.lastTry && knowledge.lastTry.question === question
      ? knowledge.lastTry
      : null;
  knowledge.lastTry = { question, passages };
  const blocks = before
    ? [
        passageBlock(`Before ${change}`, before.passages, "before"),
        passageBlock(`After ${change}`, passages, "after"),
      ]
    : [passageBlock(`Passages for “${excerpt(question, 80)}”`, passages, "now")];
  $("try-results").replaceChildren(...blocks);
}

function passageBlock(title, passages, kind) {
  const list = passages.length
    ? el(
        "ol",
        { class: "passages" },
        ...passages.map((p) =>
          el(
            "li",
            { class: "passage", attrs: { "data-id": p.id } },
            el(
              "p",
              {},
              el("span", { class: "topic", text: p.topic }),
              el("span", { class: "meta", text: ` (${p.id}) score ${p.score}` }),
            ),
            el("p", { class: "text", text: excerpt(p.content) }),
          ),
        ),
      )
    : el("p", { class: "note", text: "The retriever finds nothing." });
  return el("div", { class: `try ${kind}` }, el("h3", { text: title }), list);
}

function setUpKnowledge() {
  $("doc-form").addEventListener("submit", saveDocument);
  $("doc-cancel").addEventListener("click", () => resetForm());
  $("try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = $("try-question").value.trim();
    if (!question) {
      say("Type a question to try.");
      return;
    }
    try {
      await tryQuestion(question);
    } catch (error) {
      failed(error);
    }
  });
}

// ---- audit log ---------------------------------------------------------------------------

async function renderAudit() {
  await fillList("audit", `/api/v1/admin/audit?limit=${LIST_LIMIT}`, (row) =>
    el(
      "li",
      { class: "item audit" },
      el(
        "p",
        {},
        el("strong", { text: row.action }),
        row.target ? el("span", { text: `: ${row.target}` }) : null,
      ),
      el("p", { class: "meta", text: `${row.admin} · ${when(row.at)}` }),
    ),
  );
}

const RENDER = {
  dashboard: renderDashboard,
  conversations: renderConversations,
  unanswered: renderUnanswered,
  disliked: renderDisliked,
  knowledge: renderKnowledge,
  audit: renderAudit,
};

start();
