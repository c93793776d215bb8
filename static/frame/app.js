/*
 * The chat panel, running in the widget's iframe on the chat server's origin.
 *
 * The access token never leaves this frame: it is kept in this origin's
 * storage (memory when storage is refused) and sent only to this server. The
 * host page and this frame exchange just open / close / ready / unread
 * messages, each side checking the other's origin.
 *
 * Conversation state, per message id (the client's own id, a UUID):
 *   outbox (persisted) → sent → ack → reply: start, token… (typing indicator
 *   until the first token), end. A message typed while offline waits in the
 *   outbox and is sent after the reconnect with the same id, so the server
 *   stores it once whatever happens. After a reconnect every unfinished reply
 *   is resumed from the last token seen.
 *
 * Conversations: the log shows one conversation (state.conversationId; null until
 * the first message of a visitor who has none); the list (☰) makes, opens, renames
 * and deletes them. Frames of other conversations are not shown; a `conversation`
 * frame keeps the list in step with the visitor's other tabs.
 *
 * Guests: where the server allows them (POST /api/v1/auth/guest answers 201), a
 * visitor without a token chats at once as a guest, and may sign up or log in later
 * with the guest's token, which keeps the conversation. A host page that knows the
 * visitor hands a signed identity token (`data-identity-token`, ChatWidget.identify)
 * through the loader; it goes to POST /api/v1/auth/identify and nowhere else.
 */

import { Channel, wsUrl } from "./channel.js";
import { render } from "./markdown.js";
import { Store } from "./storage.js";

const MAX_CHARS = 4000;
const HISTORY_LIMIT = 50;
const REFRESH_BEFORE_S = 120;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};

// ---- configuration from the loader: the URL fragment (origin, colour) and a message --
//
// Title and greeting are text shown on this origin, so they come only from the
// embedding page, in a `config` message from its origin, checked as every message
// from the host is (the page may frame us only if ALLOWED_ORIGINS lets it, by CSP
// frame-ancestors). Opened from a link, the page is not framed and shows neither.

const DEFAULT_TITLE = "Chat with us";
const params = new URLSearchParams(location.hash.slice(1));
const config = {
  title: DEFAULT_TITLE,
  greeting: "",
  color: /^#(?:[0-9a-f]{3}){1,2}$/i.test(params.get("color") || "") ? params.get("color") : null,
  host: hostOrigin(params.get("host")),
};

/** The embedding page's origin, when we are framed and it checks out. */
function hostOrigin(claimed) {
  if (window.parent === window || !claimed) return null;
  const ancestors = location.ancestorOrigins;
  if (ancestors && ancestors.length && ancestors[0] !== claimed) return null;
  return claimed;
}

function toHost(type) {
  if (config.host) window.parent.postMessage({ chatWidget: 1, type }, config.host);
}

function ink(hex) {
  let h = hex.slice(1);
  if (h.length === 3) h = h.replace(/./g, "$&$&");
  const lum = [0, 2, 4].map((i) => {
    const c = parseInt(h.substr(i, 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const l = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2];
  return (l + 0.05) / 0.05 > 1.05 / (l + 0.05) ? "#000" : "#fff";
}

// ---- state -------------------------------------------------------------------

const store = new Store("chat-widget:");
const state = {
  token: store.get("token"),
  email: store.get("email"),
  guest: store.get("guest") === "1",
  conversationId: Number(store.get("conversation")) || null,
  conversations: [], // the list, most recently active first
  awaitingIdentity: params.get("identity") === "1",
  mode: "login",
  open: !config.host, // standalone (not framed): always "open"
  messages: new Map(), // id → {id, text, status, messageId, turn, bubble, meta}
  replies: new Map(), // id → {id, text, seq, sources, done, finish, bubble, body, live}
  outbox: [], // ids waiting for an ack, in send order
  cancels: new Set(), // ids to cancel once connected
  refreshTimer: null,
  historyLoaded: false,
};

const channel = new Channel({
  url: wsUrl(location.origin),
  token: () => state.token,
  onFrame: (frame) => handleFrame(frame),
  onStatus: (status, detail) => showStatus(status, detail),
  onAuthFailed: () => logout("Your session has ended. Please log in again."),
});

// ---- REST ----------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const err = new Error(detailText(data, resp));
    err.status = resp.status;
    throw err;
  }
  return data;
}

function detailText(data, resp) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (typeof d === "string" ? d : d.msg || d.message || JSON.stringify(d))).join("; ");
  }
  if (resp.status === 429) return "Too many attempts. Please wait a moment and try again.";
  return `The server answered ${resp.status}.`;
}

// ---- authentication --------------------------------------------------------------

function setToken(token, email, guest = false) {
  state.token = token;
  store.set("token", token);
  state.guest = guest;
  if (guest) store.set("guest", "1");
  else store.remove("guest");
  if (email) {
    state.email = email;
    store.set("email", email);
  }
  scheduleRefresh();
}

function setConversation(id) {
  state.conversationId = id || null;
  if (id) store.set("conversation", String(id));
  else store.remove("conversation");
}

/** A guest's token, where the server allows guests; false otherwise. */
async function becomeGuest() {
  try {
    const body = await api("POST", "/api/v1/auth/guest");
    setToken(body.access_token, null, true);
    state.email = null;
    store.remove("email");
    return true;
  } catch {
    return false;
  }
}

/** A host-signed identity token (from the embedding page): log in as that visitor. A
 * guest's conversations carry over (its token goes along as the Bearer). */
async function identify(token) {
  state.awaitingIdentity = false;
  if (typeof token !== "string" || !token) return;
  channel.stop();
  try {
    const body = await api("POST", "/api/v1/auth/identify", { token });
    setToken(body.access_token, null, false);
    const me = await api("GET", "/api/v1/auth/me");
    state.email = me.email;
    if (me.email) store.set("email", me.email);
    else store.remove("email");
    clearView();
    await enterChat(false);
  } catch (err) {
    if (state.token) channel.start();
    else showAuth();
    showNotice($("auth-notice"), "We could not recognise you. Please log in.");
  }
}

function tokenExpiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).exp || null;
  } catch {
    return null;
  }
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  const exp = state.token && tokenExpiry(state.token);
  if (!exp) return;
  const wait = Math.max(5, exp - Date.now() / 1000 - REFRESH_BEFORE_S);
  state.refreshTimer = setTimeout(refreshToken, Math.min(wait * 1000, 2 ** 31 - 1));
}

async function refreshToken() {
  if (!state.token) return;
  try {
    const body = await api("POST", "/api/v1/auth/refresh");
    setToken(body.access_token);
    channel.reauth(body.access_token);
  } catch (err) {
    if (err.status === 401) logout("Your session has ended. Please log in again.");
    else state.refreshTimer = setTimeout(refreshToken, 15000);
  }
}

function setMode(mode) {
  state.mode = mode;
  const signup = mode === "signup";
  $("mode-login").setAttribute("aria-pressed", String(!signup));
  $("mode-signup").setAttribute("aria-pressed", String(signup));
  $("auth-heading").textContent = signup ? "Create an account" : "Log in to chat";
  $("auth-submit").textContent = signup ? "Sign up" : "Log in";
  $("password").autocomplete = signup ? "new-password" : "current-password";
  $("password-hint").hidden = !signup;
  $("auth-error").textContent = "";
}

async function submitAuth(event) {
  event.preventDefault();
  if (!state.guest) state.token = null; // a stale token must not travel with the form
  const email = $("email").value.trim();
  const password = $("password").value;
  const error = $("auth-error");
  error.textContent = "";
  if (!email || !email.includes("@")) {
    error.textContent = "Please enter your email address.";
    $("email").focus();
    return;
  }
  if (password.length < 8) {
    error.textContent = "The password must be at least 8 characters.";
    $("password").focus();
    return;
  }
  const submit = $("auth-submit");
  submit.disabled = true;
  // A guest signing up or logging in: its token goes along (the server keeps the
  // conversation) and stops working; its socket is closed first, quietly.
  const wasGuest = state.guest && !!state.token;
  if (wasGuest) channel.stop();
  try {
    if (state.mode === "signup") {
      const body = await api("POST", "/api/v1/auth/signup", { email, password });
      if (!body.access_token) {
        setMode("login");
        showNotice($("auth-notice"), `We sent a verification link to ${email}. Open it, then log in.`);
        $("password").value = "";
        $("password").focus();
        return;
      }
      setToken(body.access_token, body.email || email);
      if (wasGuest) clearView();
      showBanner(
        `Welcome! We sent a verification link to ${body.email || email}: open it to confirm your address and choose your password, then log in again.`,
      );
    } else {
      const body = await api("POST", "/api/v1/auth/login", { email, password });
      setToken(body.access_token, email);
      if (wasGuest) clearView();
    }
    $("password").value = "";
    await enterChat(true);
  } catch (err) {
    error.textContent =
      err.status === 401 ? "Wrong email or password." : err.message || "Something went wrong. Please try again.";
    if (wasGuest && state.guest) channel.start();
  } finally {
    submit.disabled = false;
  }
}

function showNotice(node, text) {
  node.textContent = text;
  node.hidden = false;
}

function showBanner(text) {
  $("verify-text").textContent = text;
  $("verify-notice").hidden = false;
}

/** Forget the conversation on screen (not the token). */
function clearView() {
  state.messages.clear();
  state.replies.clear();
  state.outbox = [];
  state.cancels.clear();
  state.historyLoaded = false;
  $("log").replaceChildren();
  updateStop();
}

function logout(message) {
  channel.stop();
  clearTimeout(state.refreshTimer);
  store.remove(outboxKey());
  state.token = null;
  state.guest = false;
  store.remove("token");
  store.remove("guest");
  setConversation(null);
  state.conversations = [];
  clearView();
  $("verify-notice").hidden = true;
  $("convs").hidden = true;
  showAuth();
  if (message) showNotice($("auth-notice"), message);
  if (state.open) $("email").focus();
}

function showAuth() {
  $("chat").hidden = true;
  $("auth").hidden = false;
  $("convs").hidden = true;
  $("convs-toggle").hidden = true;
  $("logout").hidden = true;
  $("who").hidden = true;
  $("status").hidden = true;
  $("auth-back").hidden = !(state.guest && state.token);
  $("email").value = state.email || "";
}

/** A guest's way to an account, from the chat: the form, with a way back. */
function offerSignup() {
  showAuth();
  setMode("signup");
  $("auth-heading").textContent = "Sign up to keep this conversation";
  if (state.open) $("email").focus();
}

// ---- chat view ---------------------------------------------------------------------

function outboxKey() {
  return `outbox:${state.email || ""}`;
}

function saveOutbox() {
  const items = state.outbox.map((id) => ({ id, text: state.messages.get(id).text }));
  if (items.length) store.setJSON(outboxKey(), items);
  else store.remove(outboxKey());
}

async function enterChat(focus) {
  $("auth").hidden = true;
  $("auth-notice").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = state.guest;
  $("guest-notice").hidden = !state.guest;
  $("convs-toggle").hidden = false;
  const who = state.guest ? "Guest" : state.email || "";
  $("who").hidden = !who;
  $("who").textContent = who;
  if (focus && state.open) $("input").focus();
  showGreeting();
  try {
    await loadConversations();
    await loadHistory();
  } catch (err) {
    if (err.status === 401) {
      logout("Your session has ended. Please log in again.");
      return;
    }
    showStatus("history-failed");
  }
  for (const item of store.getJSON(outboxKey(), [])) {
    if (item && typeof item.id === "string" && !state.messages.has(item.id)) {
      addUserMessage(item.id, item.text, "queued");
      state.outbox.push(item.id);
    }
  }
  channel.start();
}

// ---- conversations --------------------------------------------------------------------

async function loadConversations() {
  state.conversations = await api("GET", "/api/v1/chat/conversations?limit=100");
  if (!state.conversations.some((c) => c.id === state.conversationId)) {
    // The most recently active one (null: none yet; the first message makes it).
    setConversation(state.conversations.length ? state.conversations[0].id : null);
  }
  renderConversations();
}

function conversationTitle(c) {
  return c.title || "New conversation";
}

function renderConversations() {
  const list = $("conv-list");
  list.replaceChildren();
  for (const c of state.conversations) {
    const item = el("li", "conv");
    item.dataset.id = String(c.id);
    item.setAttribute("aria-current", String(c.id === state.conversationId));
    const openButton = el("button", "conv-open", conversationTitle(c));
    openButton.type = "button";
    openButton.addEventListener("click", () => switchConversation(c.id));
    const rename = el("button", "conv-action", "Rename");
    rename.type = "button";
    rename.setAttribute("aria-label", `Rename “${conversationTitle(c)}”`);
    rename.addEventListener("click", () => startRename(item, c));
    const remove = el("button", "conv-action danger", "Delete");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete “${conversationTitle(c)}”`);
    remove.addEventListener("click", () => {
      if (remove.dataset.armed) deleteConversation(c.id);
      else {
        remove.dataset.armed = "1";
        remove.textContent = "Delete?";
      }
    });
    item.append(openButton, rename, remove);
    list.append(item);
  }
}

function startRename(item, c) {
  const input = el("input", "conv-title-input");
  input.value = c.title || "";
  input.maxLength = 200;
  input.setAttribute("aria-label", "New title");
  const save = async () => {
    const title = input.value.trim();
    if (!title) return renderConversations();
    try {
      const updated = await api("PATCH", `/api/v1/chat/conversations/${c.id}`, { title });
      upsertConversation(updated);
    } catch {
      renderConversations();
    }
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      save();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      renderConversations();
    }
  });
  item.replaceChildren(input);
  input.focus();
}

function upsertConversation(c) {
  const i = state.conversations.findIndex((x) => x.id === c.id);
  if (i >= 0) state.conversations[i] = { ...state.conversations[i], ...c };
  else state.conversations.unshift(c);
  renderConversations();
}

async function newConversation() {
  const c = await api("POST", "/api/v1/chat/conversations", {});
  upsertConversation(c);
  await switchConversation(c.id);
}

async function deleteConversation(id) {
  await api("DELETE", `/api/v1/chat/conversations/${id}`);
  forgetConversation(id);
}

function forgetConversation(id) {
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.conversationId === id) {
    setConversation(state.conversations.length ? state.conversations[0].id : null);
    clearView();
    loadHistory().then(resumeUnanswered, () => showStatus("history-failed"));
  }
  renderConversations();
}

async function switchConversation(id) {
  showConversations(false);
  if (id === state.conversationId && state.historyLoaded) return;
  setConversation(id);
  renderConversations();
  clearView();
  showGreeting();
  try {
    await loadHistory();
    resumeUnanswered();
  } catch {
    showStatus("history-failed");
  }
  if (state.open) $("input").focus();
}

/** Questions of the conversation shown whose reply is not in: follow them (resume). */
function resumeUnanswered() {
  for (const msg of state.messages.values()) {
    if (msg.status !== "acked" || state.replies.has(msg.id)) continue;
    ensureReply(msg.id);
    channel.send({ type: "resume", id: msg.id, after_seq: -1 });
  }
}

function showConversations(show) {
  $("convs").hidden = !show;
  $("convs-toggle").setAttribute("aria-expanded", String(show));
  $("convs").style.setProperty("--head-h", `${document.querySelector(".head").offsetHeight}px`);
  if (show) $("conv-new").focus();
}

function onConversationFrame(frame) {
  if (frame.event === "deleted") return forgetConversation(frame.id);
  if (frame.event === "created" || frame.event === "renamed") {
    const known = state.conversations.find((c) => c.id === frame.id);
    upsertConversation(known ? { ...known, title: frame.title } : { id: frame.id, title: frame.title });
  }
  return undefined;
}

async function loadHistory() {
  if (!state.conversationId) {
    state.historyLoaded = true;
    return;
  }
  const rows = await api(
    "GET",
    `/api/v1/chat/chat-history?limit=${HISTORY_LIMIT}&conversation_id=${state.conversationId}`,
  );
  const clientIds = new Map(); // row id → client id
  for (const row of rows) {
    if (row.is_user_message) {
      const id = row.client_id || `row-${row.id}`;
      clientIds.set(row.id, id);
      if (!state.messages.has(id)) addUserMessage(id, row.message, "acked", row.id);
    } else {
      const id = clientIds.get(row.reply_to) || `reply-${row.id}`;
      if (!state.messages.has(id)) continue; // its question is older than the page of history
      const reply = ensureReply(id);
      if (!reply.done) {
        reply.sources = row.sources || [];
        reply.replyId = row.id;
        reply.feedback = row.feedback || null;
        finishReply(reply, row.message, row.finish_reason || "stop", false);
      }
    }
  }
  // A question without a reply yet: its reply is still being generated (ready.pending
  // will resume it) or was lost; either way the typing indicator shows until we know.
  state.historyLoaded = true;
  scrollToEnd(true);
}

function addUserMessage(id, text, status, messageId) {
  const turn = el("div", "turn");
  const bubble = el("div", "msg user");
  const body = el("div", "body", text);
  const meta = el("div", "meta");
  bubble.append(body, meta);
  turn.append(bubble);
  const atEnd = nearEnd();
  $("log").append(turn);
  const msg = { id, text, status, messageId: messageId || null, turn, bubble, meta };
  state.messages.set(id, msg);
  setMessageStatus(msg, status);
  scrollToEnd(atEnd);
  return msg;
}

function setMessageStatus(msg, status, detail) {
  msg.status = status;
  msg.bubble.classList.toggle("failed", status === "failed");
  msg.meta.replaceChildren();
  msg.meta.hidden = status === "acked";
  if (status === "queued") msg.meta.textContent = "Waiting for the connection…";
  else if (status === "sending") msg.meta.textContent = "Sending…";
  else if (status === "failed") {
    msg.meta.append(`Not sent: ${detail || "an error occurred"}`);
    const retry = el("button", "retry", "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      queueMessage(msg.id);
      $("input").focus();
    });
    msg.meta.append(retry);
  }
  msg.bubble.dataset.status = status;
}

function ensureReply(id) {
  let reply = state.replies.get(id);
  if (reply) return reply;
  const msg = state.messages.get(id);
  const bubble = el("div", "msg bot");
  bubble.dataset.replyTo = id;
  bubble.dataset.state = "waiting";
  const body = el("div", "body");
  const typing = el("div", "typing");
  typing.setAttribute("role", "img");
  typing.setAttribute("aria-label", "The assistant is typing");
  typing.append(el("span"), el("span"), el("span"));
  body.append(typing);
  bubble.append(body);
  const atEnd = nearEnd();
  if (msg) msg.turn.append(bubble);
  else $("log").append(bubble);
  reply = {
    id, text: "", seq: -1, sources: null, done: false, finish: null, bubble, body, live: false,
    replyId: null, feedback: null,
  };
  state.replies.set(id, reply);
  scrollToEnd(atEnd);
  updateStop();
  return reply;
}

function renderReply(reply) {
  const atEnd = nearEnd();
  if (!reply.text && !reply.done) {
    // Nothing yet: keep the typing indicator.
  } else {
    reply.body.replaceChildren(render(reply.text));
  }
  reply.bubble.querySelector(".sources")?.remove();
  reply.bubble.querySelector(".meta")?.remove();
  if (reply.done && reply.finish !== "stop") {
    const note =
      reply.finish === "cancelled"
        ? "Stopped."
        : "This reply was interrupted.";
    if (!reply.text) reply.body.replaceChildren();
    reply.bubble.append(el("div", "meta", note));
  }
  if (reply.sources && reply.sources.length && reply.done) {
    const box = el("div", "sources");
    box.append("Sources: ");
    const list = el("ul");
    for (const s of reply.sources) list.append(el("li", null, String(s.topic || s.id)));
    box.append(list);
    reply.bubble.append(box);
  }
  reply.bubble.querySelector(".rate")?.remove();
  if (reply.done && reply.replyId && reply.text) reply.bubble.append(ratingBar(reply));
  reply.bubble.dataset.state = reply.done ? reply.finish : reply.text ? "streaming" : "waiting";
  scrollToEnd(atEnd);
}

// ---- feedback: thumbs up or down under a finished reply, a comment after a thumbs down --

function ratingBar(reply) {
  const bar = el("div", "rate");
  bar.setAttribute("role", "group");
  bar.setAttribute("aria-label", "Rate this answer");
  for (const [rating, symbol, label] of [
    ["up", "👍", "Helpful"],
    ["down", "👎", "Not helpful"],
  ]) {
    const button = el("button", `thumb ${rating}`, symbol);
    button.type = "button";
    button.setAttribute("aria-label", label);
    button.setAttribute("aria-pressed", String(reply.feedback === rating));
    button.addEventListener("click", () => rate(reply, reply.feedback === rating ? null : rating));
    bar.append(button);
  }
  if (reply.askComment) bar.append(commentForm(reply));
  return bar;
}

function commentForm(reply) {
  const form = el("form", "comment");
  const input = el("input");
  input.type = "text";
  input.maxLength = 1000;
  input.placeholder = "What was missing? (optional)";
  input.setAttribute("aria-label", "What was missing? (optional)");
  const send = el("button", null, "Send");
  send.type = "submit";
  form.append(input, send);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    rate(reply, "down", input.value.trim() || null);
  });
  return form;
}

async function rate(reply, rating, comment) {
  const path = `/api/v1/chat/feedback/${reply.replyId}`;
  const before = reply.feedback;
  reply.feedback = rating;
  reply.askComment = rating === "down" && comment === undefined;
  renderReply(reply);
  const focus = reply.askComment
    ? reply.bubble.querySelector(".comment input")
    : reply.bubble.querySelector(`.thumb.${rating || before}`);
  focus?.focus();
  try {
    if (rating === null) await api("DELETE", path);
    else await api("PUT", path, comment ? { rating, comment } : { rating });
    if (comment !== undefined) $("announcer").textContent = "Thank you for the feedback.";
  } catch (err) {
    reply.feedback = before;
    reply.askComment = false;
    renderReply(reply);
    $("announcer").textContent = `The rating was not saved: ${err.message}`;
  }
}

function finishReply(reply, text, finish, announce) {
  reply.text = typeof text === "string" ? text : reply.text;
  reply.done = true;
  reply.finish = finish;
  renderReply(reply);
  updateStop();
  if (announce) {
    const words = reply.text || (finish === "cancelled" ? "Reply stopped." : "");
    $("announcer").textContent = "";
    // A fresh node each time, so the same text twice is announced twice.
    $("announcer").append(el("span", null, `Assistant: ${words}`));
    if (!state.open) toHost("unread");
  }
}

function updateStop() {
  let streaming = false;
  for (const reply of state.replies.values()) if (!reply.done) streaming = true;
  const stop = $("stop");
  const hadFocus = document.activeElement === stop;
  stop.hidden = !streaming;
  if (!streaming && hadFocus) $("input").focus();
}

function nearEnd() {
  const log = $("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 60;
}

function scrollToEnd(force) {
  if (force) $("log").scrollTop = $("log").scrollHeight;
}

// ---- sending -----------------------------------------------------------------------

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function sendText(text) {
  const id = newId();
  const msg = addUserMessage(id, text, "queued");
  msg.conversationId = state.conversationId;
  queueMessage(id);
  scrollToEnd(true);
}

function queueMessage(id) {
  const msg = state.messages.get(id);
  if (!state.outbox.includes(id)) state.outbox.push(id);
  saveOutbox();
  setMessageStatus(msg, "queued");
  if (channel.send(messageFrame(msg))) setMessageStatus(msg, "sending");
  updateStop();
}

function messageFrame(msg) {
  const frame = { type: "message", id: msg.id, text: msg.text };
  if (msg.conversationId) frame.conversation_id = msg.conversationId;
  return frame;
}

function stopReplies() {
  for (const reply of state.replies.values()) {
    if (reply.done) continue;
    if (!channel.send({ type: "cancel", id: reply.id })) state.cancels.add(reply.id);
  }
  updateStop();
}

// ---- frames from the server ----------------------------------------------------------

function handleFrame(frame) {
  switch (frame.type) {
    case "ready":
      return onReady(frame);
    case "ack":
      return onAck(frame);
    case "message":
      return onEcho(frame);
    case "conversation":
      return onConversationFrame(frame);
    case "start": {
      if (!state.messages.has(frame.id)) return undefined; // another conversation's
      const reply = ensureReply(frame.id);
      reply.sources = Array.isArray(frame.sources) ? frame.sources : [];
      reply.live = true;
      return;
    }
    case "token":
      return onToken(frame);
    case "end": {
      if (!state.messages.has(frame.id)) return undefined;
      const reply = ensureReply(frame.id);
      reply.replyId = frame.message_id || null;
      return finishReply(reply, frame.text, frame.finish_reason, true);
    }
    case "error":
      return onError(frame);
    default:
      return undefined;
  }
}

function onReady(frame) {
  if (frame.user && frame.user.email) {
    state.email = frame.user.email;
    $("who").textContent = state.email;
    $("who").hidden = false;
  }
  // Every unfinished reply, ours or listed as pending, goes on from the last token seen.
  const resume = new Map();
  // Pending replies of the conversation shown (the others show when it is opened).
  for (const p of frame.pending || []) if (state.messages.has(p.id)) resume.set(p.id, -1);
  for (const reply of state.replies.values()) if (!reply.done) resume.set(reply.id, reply.seq);
  for (const [id, afterSeq] of resume) {
    const local = state.replies.get(id);
    if ((local && local.done) || state.outbox.includes(id)) continue; // a resend brings it
    channel.send({ type: "resume", id, after_seq: local ? local.seq : afterSeq });
  }
  for (const id of state.cancels) channel.send({ type: "cancel", id });
  state.cancels.clear();
  for (const id of state.outbox) {
    const msg = state.messages.get(id);
    if (msg.status === "failed") continue;
    channel.send(messageFrame(msg));
    setMessageStatus(msg, "sending");
  }
}

function onAck(frame) {
  const msg = state.messages.get(frame.id);
  if (!msg) return;
  msg.messageId = frame.message_id;
  setMessageStatus(msg, "acked");
  if (frame.conversation_id && !msg.conversationId) {
    // The first message of a visitor without a conversation made one.
    msg.conversationId = frame.conversation_id;
    if (!state.conversationId) setConversation(frame.conversation_id);
  }
  noteActivity(frame.conversation_id, msg.text);
  state.outbox = state.outbox.filter((x) => x !== frame.id);
  saveOutbox();
  ensureReply(frame.id);
}

/** A message went to conversation `id`: it moves to the top of the list (a new one is
 * fetched, with its title). */
function noteActivity(id, text) {
  if (!id) return;
  const known = state.conversations.find((c) => c.id === id);
  if (!known) {
    loadConversations().catch(() => {});
    return;
  }
  if (!known.title) known.title = [...text].slice(0, 60).join("");
  state.conversations = [known, ...state.conversations.filter((c) => c !== known)];
  renderConversations();
}

function onEcho(frame) {
  if (state.messages.has(frame.id)) return;
  noteActivity(frame.conversation_id, frame.text);
  if (frame.conversation_id && frame.conversation_id !== state.conversationId) return;
  addUserMessage(frame.id, frame.text, "acked", frame.message_id);
  ensureReply(frame.id);
}

function onToken(frame) {
  if (!state.messages.has(frame.id)) return;
  const reply = ensureReply(frame.id);
  if (reply.done || typeof frame.seq !== "number" || frame.seq <= reply.seq) return;
  reply.seq = frame.seq;
  reply.text += String(frame.text);
  renderReply(reply);
}

function onError(frame) {
  const msg = frame.id ? state.messages.get(frame.id) : null;
  if (msg && msg.status !== "acked") {
    // Refused before its ack: nothing was stored.
    state.outbox = state.outbox.filter((x) => x !== frame.id);
    saveOutbox();
    let why = frame.message || frame.code;
    if (frame.code === "rate_limited") {
      why = `too many messages, try again in ${Math.ceil(frame.retry_after || 1)} s`;
    }
    setMessageStatus(msg, "failed", why);
    updateStop();
    return;
  }
  if (frame.code === "token_expired") {
    refreshToken();
    return;
  }
  if (frame.code === "unknown_message" && frame.id) {
    const reply = state.replies.get(frame.id);
    if (reply && !reply.done) finishReply(reply, reply.text, "error", false);
  }
  // Reply failures (upstream_error, unavailable after the ack) are followed by `end`.
}

// ---- status line ------------------------------------------------------------------------

function showStatus(status, detail) {
  const node = $("status");
  if (status === "ready" || status === "stopped") {
    node.hidden = true;
    node.textContent = "";
  } else if (status === "connecting") {
    node.hidden = node.hidden && !node.dataset.seen; // first connect: stay quiet
    node.textContent = "Connecting…";
  } else if (status === "waiting") {
    node.hidden = false;
    node.dataset.seen = "1";
    const s = Math.max(1, Math.round((detail?.delay || 0) / 1000));
    node.textContent = `Connection lost. Reconnecting in ${s} s… Messages you send will go out once it is back.`;
  } else if (status === "history-failed") {
    node.hidden = false;
    node.textContent = "Could not load the earlier messages.";
  }
  document.body.dataset.connection = status;
}

// ---- wiring ------------------------------------------------------------------------------

function setOpen(open) {
  state.open = open;
  if (!open) return;
  if (!$("chat").hidden) $("input").focus();
  else if (!$("email").value) $("email").focus();
  else $("password").focus();
}

/** The greeting as the conversation's first bubble, once there is a conversation. */
function showGreeting() {
  if (!config.greeting || $("chat").hidden || $("log").querySelector(".greeting-msg")) return;
  const bubble = el("div", "msg bot greeting-msg");
  bubble.append(render(config.greeting));
  $("log").prepend(bubble);
}

/** Title and greeting from the embedding page's tag (the loader's `config` message). */
function applyConfig(msg) {
  config.title = (typeof msg.title === "string" && msg.title.slice(0, 80)) || DEFAULT_TITLE;
  config.greeting = typeof msg.greeting === "string" ? msg.greeting.slice(0, 500) : "";
  document.title = config.title;
  $("title").textContent = config.title;
  $("auth-greeting").textContent = config.greeting;
  $("auth-greeting").hidden = !config.greeting;
  $("log").querySelector(".greeting-msg")?.remove();
  showGreeting();
}

function init() {
  document.title = config.title;
  $("title").textContent = config.title;
  if (config.color) {
    document.documentElement.style.setProperty("--accent", config.color);
    document.documentElement.style.setProperty("--ink", ink(config.color));
  }
  $("close").hidden = !config.host;
  $("convs-toggle").addEventListener("click", () => showConversations($("convs").hidden));
  $("conv-new").addEventListener("click", () => newConversation().catch(() => showStatus("history-failed")));
  $("guest-signup").addEventListener("click", offerSignup);
  $("auth-back").addEventListener("click", () => {
    setMode("login");
    enterChat(true);
  });
  $("close").addEventListener("click", () => toHost("close"));
  $("logout").addEventListener("click", () => logout());
  $("mode-login").addEventListener("click", () => setMode("login"));
  $("mode-signup").addEventListener("click", () => setMode("signup"));
  $("auth-form").addEventListener("submit", submitAuth);
  $("stop").addEventListener("click", stopReplies);
  $("verify-dismiss").addEventListener("click", () => {
    $("verify-notice").hidden = true;
    $("input").focus();
  });

  const input = $("input");
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if ([...text].length > MAX_CHARS) {
      showBanner(`A message can be at most ${MAX_CHARS} characters.`);
      return;
    }
    input.value = "";
    autosize();
    sendText(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  const autosize = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, 120)}px`;
  };
  input.addEventListener("input", autosize);

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && config.host) {
      event.preventDefault();
      toHost("close");
    }
  });
  window.addEventListener("message", (event) => {
    if (!config.host || event.origin !== config.host || event.source !== window.parent) return;
    const msg = event.data;
    if (!msg || msg.chatWidget !== 1) return;
    if (msg.type === "open") setOpen(true);
    else if (msg.type === "close") setOpen(false);
    else if (msg.type === "config") applyConfig(msg);
    else if (msg.type === "identify") identify(msg.token);
    else if (msg.type === "logout") {
      state.awaitingIdentity = false;
      logout();
    }
  });

  setMode("login");
  if (state.awaitingIdentity) {
    // The host page knows the visitor: its identity token comes next (identify).
    showAuth();
  } else if (state.token) enterChat(false);
  else {
    showAuth();
    becomeGuest().then((ok) => {
      if (ok && !state.token) return;
      if (ok) enterChat(false);
    });
  }
  toHost("ready");
}

init();
