/*
 * Chat widget loader. Embed with:
 *   <script src="https://CHAT-SERVER/static/widget.js" data-server="https://CHAT-SERVER" defer></script>
 *
 * It only draws a launcher button and an iframe served by the chat server; the
 * chat itself (and the visitor's token) lives inside that iframe, on the chat
 * server's origin, where this page's scripts cannot reach it. The launcher sits
 * in a shadow root, so the page's styles and ours never meet.
 *
 * Options (data- attributes on the script tag): data-server, data-position
 * (bottom-right | bottom-left), data-color (#rgb or #rrggbb), data-title,
 * data-greeting, data-label (the launcher's accessible name), data-identity-token
 * (a token the host site's backend signed with IDENTITY_SECRET: the visitor chats as
 * that user at once).
 * API: window.ChatWidget.open(), .close(), .toggle(), .isOpen(), .identify(token)
 * (the same as data-identity-token, later), .logout() (the widget forgets the visitor).
 * The identity token goes only to the chat server's frame (postMessage to its origin).
 */
(function () {
  "use strict";
  if (window.ChatWidget) return;

  var script = document.currentScript;
  var data = (script && script.dataset) || {};

  function originOf(url) {
    try {
      var u = new URL(url, location.href);
      return u.protocol === "https:" || u.protocol === "http:" ? u.origin : null;
    } catch (e) {
      return null;
    }
  }

  var server = originOf(data.server || (script && script.src) || "");
  if (!server) {
    if (window.console) console.error("ChatWidget: data-server must be an http(s) URL");
    return;
  }
  var color = /^#(?:[0-9a-f]{3}){1,2}$/i.test(data.color || "") ? data.color : "#1d4ed8";
  var left = data.position === "bottom-left";
  var title = (data.title || "Chat with us").slice(0, 80);
  var greeting = (data.greeting || "").slice(0, 500);
  var label = data.label || "Open chat";
  var identity = data.identityToken || null;
  // Read once; other scripts of the page have no need to find it on the tag later.
  if (script && identity) script.removeAttribute("data-identity-token");

  // Black or white text on the accent, whichever contrasts more (WCAG luminance).
  function ink(hex) {
    var h = hex.slice(1);
    if (h.length === 3) h = h.replace(/./g, "$&$&");
    var lum = [0, 2, 4].map(function (i) {
      var c = parseInt(h.substr(i, 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    var l = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2];
    return (l + 0.05) / 0.05 > 1.05 / (l + 0.05) ? "#000" : "#fff";
  }

  var side = left ? "left" : "right";
  var css =
    ":host{all:initial!important;position:fixed!important;z-index:2147483000!important;" +
    "bottom:0;" + side + ":0;width:0;height:0}" +
    ".l{position:fixed;bottom:20px;" + side + ":20px;width:56px;height:56px;border:0;border-radius:50%;" +
    "background:" + color + ";color:" + ink(color) + ";cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.3);" +
    "display:flex;align-items:center;justify-content:center;padding:0;margin:0}" +
    ".l:focus-visible{outline:3px solid " + color + ";outline-offset:3px}" +
    ".l svg{width:28px;height:28px;fill:currentColor}" +
    ".l[aria-expanded=true] .o,.l[aria-expanded=false] .x{display:none}" +
    ".d{position:absolute;top:2px;right:2px;width:12px;height:12px;border-radius:50%;" +
    "background:#dc2626;border:2px solid #fff;display:none}.l.u .d{display:block}" +
    ".p{position:fixed;bottom:88px;" + side + ":20px;width:380px;height:600px;" +
    "max-width:calc(100vw - 40px);max-height:calc(100vh - 108px);border-radius:12px;overflow:hidden;" +
    "box-shadow:0 8px 30px rgba(0,0,0,.3);background:#fff}" +
    // Hidden, not display:none: the frame keeps its size, so reopening never
    // relayouts the (often cross-process) frame under the visitor's pointer.
    ".p[hidden]{display:block;visibility:hidden}" +
    "iframe{border:0;width:100%;height:100%;display:block;color-scheme:normal}" +
    "@media (max-width:480px),(max-height:500px){.p{inset:0;width:100%;height:100%;" +
    "max-width:none;max-height:none;border-radius:0}.open .l{display:none}}";

  var host = document.createElement("div");
  host.setAttribute("data-chat-widget", "");
  var root = host.attachShadow({ mode: "open" });
  if (root.adoptedStyleSheets && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  } else {
    var style = document.createElement("style");
    style.textContent = css;
    root.appendChild(style);
  }

  var wrap = document.createElement("div");
  var ns = "http://www.w3.org/2000/svg";
  function icon(cls, path) {
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", cls);
    var p = document.createElementNS(ns, "path");
    p.setAttribute("d", path);
    svg.appendChild(p);
    return svg;
  }
  var button = document.createElement("button");
  button.type = "button";
  button.className = "l";
  button.setAttribute("aria-label", label);
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", "chat-widget-panel");
  button.appendChild(icon("o", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2z"));
  button.appendChild(
    icon("x", "M18.3 5.7 12 12l6.3 6.3-1.4 1.4L10.6 13.4 4.3 19.7 2.9 18.3 9.2 12 2.9 5.7 4.3 4.3l6.3 6.3 6.3-6.3z")
  );
  var dot = document.createElement("span");
  dot.className = "d";
  button.appendChild(dot);

  var panel = document.createElement("div");
  panel.className = "p";
  panel.id = "chat-widget-panel";
  panel.hidden = true;
  panel.inert = true;
  wrap.appendChild(panel);
  wrap.appendChild(button);
  root.appendChild(wrap);

  var frame = null;
  var frameReady = false;
  var isOpen = false;
  var queued = [];

  function post(type, extra) {
    if (!frame) return;
    if (!frameReady) {
      queued.push([type, extra]);
      return;
    }
    var msg = { chatWidget: 1, type: type };
    for (var k in extra || {}) msg[k] = extra[k];
    frame.contentWindow.postMessage(msg, server);
  }

  function ensureFrame() {
    if (frame) return;
    // Title and greeting travel by postMessage once the frame is ready (see "ready"
    // below), never in the URL: a crafted widget-frame.html link must not be able to
    // show anyone's text on the chat server's origin.
    var q = new URLSearchParams({ host: location.origin, color: color });
    // Only that an identity comes (so the frame makes no guest meanwhile), never the token.
    if (identity) q.set("identity", "1");
    frame = document.createElement("iframe");
    frame.title = title;
    frame.src = server + "/static/widget-frame.html#" + q.toString();
    frame.setAttribute("allow", "clipboard-write");
    frame.setAttribute("referrerpolicy", "origin");
    panel.appendChild(frame);
  }

  function open() {
    ensureFrame();
    if (isOpen) return;
    isOpen = true;
    panel.hidden = false;
    panel.inert = false;
    wrap.className = "open";
    button.setAttribute("aria-expanded", "true");
    button.setAttribute("aria-label", "Close chat");
    button.classList.remove("u");
    frame.focus();
    post("open");
  }

  function close(refocus) {
    if (!isOpen) return;
    isOpen = false;
    panel.hidden = true;
    panel.inert = true;
    wrap.className = "";
    button.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-label", label);
    post("close");
    if (refocus) button.focus();
  }

  function toggle() {
    if (isOpen) close(true);
    else open();
  }

  button.addEventListener("click", toggle);
  // Load the frame early when the visitor shows intent, so opening feels instant.
  button.addEventListener("pointerenter", ensureFrame, { once: true });
  button.addEventListener("focus", ensureFrame, { once: true });

  window.addEventListener("message", function (event) {
    if (!frame || event.origin !== server || event.source !== frame.contentWindow) return;
    var msg = event.data;
    if (!msg || msg.chatWidget !== 1) return;
    if (msg.type === "ready") {
      frameReady = true;
      post("config", { title: title, greeting: greeting });
      if (identity) post("identify", { token: identity });
      var q = queued.filter(function (m) {
        return m[0] !== "identify"; // sent above, the newest one
      });
      queued = [];
      if (isOpen) q.push(["open"]);
      q.forEach(function (m) {
        post(m[0], m[1]);
      });
    } else if (msg.type === "close") {
      close(true);
    } else if (msg.type === "unread" && !isOpen) {
      button.classList.add("u");
      button.setAttribute("aria-label", label + " (new reply)");
    }
  });

  function mount() {
    document.body.appendChild(host);
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);

  window.ChatWidget = {
    open: open,
    close: function () {
      close(false);
    },
    toggle: toggle,
    isOpen: function () {
      return isOpen;
    },
    identify: function (token) {
      if (typeof token !== "string" || !token) return;
      identity = token;
      ensureFrame();
      if (frameReady) post("identify", { token: token });
    },
    logout: function () {
      identity = null;
      queued = queued.filter(function (m) {
        return m[0] !== "identify";
      });
      post("logout");
    },
  };
})();
