/*
 * The WebSocket to /api/v1/chat/ws: first-frame authentication, reconnection
 * with exponential backoff and jitter, and a heartbeat that notices a dead
 * connection the browser has not noticed yet.
 *
 * States: "connecting" → (auth sent) → "ready" → on close "waiting" (a timer
 * until the next attempt) → "connecting" … ; "stopped" after stop() or when the
 * server refuses the token (close 4401), which the app handles by logging out.
 */

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000, 15000, 30000];
const HEARTBEAT_MS = 20000;
const SILENCE_MS = 10000;
const AUTH_FAILED = 4401;

export function wsUrl(origin) {
  const url = new URL("/api/v1/chat/ws", origin);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export class Channel {
  /**
   * @param {object} opts
   * @param {string} opts.url the ws(s):// URL
   * @param {() => string|null} opts.token the current access token
   * @param {(frame: object) => void} opts.onFrame every server frame after `ready` (and `ready`)
   * @param {(status: string, detail?: object) => void} opts.onStatus state changes
   * @param {() => void} opts.onAuthFailed the server refused the token
   */
  constructor(opts) {
    this.opts = opts;
    this.ws = null;
    this.status = "stopped";
    this.attempt = 0;
    this.timer = null;
    this.heartbeat = null;
    this.lastSeen = 0;
    this.onOnline = () => this.status === "waiting" && this.connectNow();
  }

  get ready() {
    return this.status === "ready";
  }

  start() {
    if (this.status !== "stopped") return;
    window.addEventListener("online", this.onOnline);
    this.connectNow();
  }

  stop() {
    this.setStatus("stopped");
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.timer);
    clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "bye");
  }

  /** Send a frame on a ready socket; false when there is none (the caller keeps it). */
  send(frame) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** A fresh token for the open connection (after a refresh). */
  reauth(token) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "auth", token }));
    }
  }

  setStatus(status, detail) {
    this.status = status;
    this.opts.onStatus(status, detail);
  }

  connectNow() {
    clearTimeout(this.timer);
    const token = this.opts.token();
    if (!token) return;
    this.setStatus("connecting");
    let ws;
    try {
      ws = new WebSocket(this.opts.url);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: this.opts.token() || token }));
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastSeen = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!frame || typeof frame.type !== "string") return;
      if (frame.type === "ready") {
        this.attempt = 0;
        this.startHeartbeat();
        this.setStatus("ready");
      }
      if (frame.type === "pong") return;
      this.opts.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.heartbeat);
      if (this.status === "stopped") return;
      if (event.code === AUTH_FAILED) {
        this.stop();
        this.opts.onAuthFailed();
        return;
      }
      this.retry();
    };
  }

  retry() {
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.setStatus("waiting", { delay });
    this.timer = setTimeout(() => this.connectNow(), delay);
  }

  startHeartbeat() {
    clearInterval(this.heartbeat);
    this.lastSeen = Date.now();
    this.heartbeat = setInterval(() => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastSeen > HEARTBEAT_MS + SILENCE_MS) {
        // No frame, not even a pong, for too long: the connection is dead.
        this.ws = null;
        ws.close(4000, "silent");
        this.retry();
        return;
      }
      ws.send('{"type":"ping"}');
    }, HEARTBEAT_MS);
  }
}
