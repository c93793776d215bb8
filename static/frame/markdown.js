/*
 * A tiny Markdown renderer that builds DOM nodes and only ever sets text with
 * textContent, so an answer holding <script> or <img onerror=…> stays text.
 *
 * Blocks: paragraphs (single newlines become <br>), ``` fenced code, "- " / "* "
 * and "1. " lists, "#" headings (rendered as bold paragraphs).
 * Inline: `code`, **bold**, *italic* / _italic_, [text](url) and bare URLs;
 * links only for http(s), opened in a new tab with rel=noopener.
 */

const INLINE =
  /`([^`\n]+)`|\*\*(?=\S)([^*]*?\S)\*\*|\*(?=\S)([^*\n]*?\S)\*|(?<![\w])_(?=\S)([^_\n]*?\S)_(?![\w])|\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"])/;

/** The URL when it is a plain http(s) link, else null. */
export function safeUrl(raw) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
}

function link(text, href, plain) {
  const a = document.createElement("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  if (plain) a.textContent = text;
  else appendInline(a, text, true);
  return a;
}

function wrap(tag, text, inLink) {
  const el = document.createElement(tag);
  appendInline(el, text, inLink);
  return el;
}

/** Append `text`, with inline markup turned into elements, to `parent` (no links in links). */
export function appendInline(parent, text, inLink = false) {
  while (text) {
    const m = INLINE.exec(text);
    if (!m) {
      parent.append(text);
      return;
    }
    if (m.index > 0) parent.append(text.slice(0, m.index));
    if (m[1] !== undefined) {
      const code = document.createElement("code");
      code.textContent = m[1];
      parent.append(code);
    } else if (m[2] !== undefined) {
      parent.append(wrap("strong", m[2], inLink));
    } else if (m[3] !== undefined || m[4] !== undefined) {
      parent.append(wrap("em", m[3] ?? m[4], inLink));
    } else if (m[5] !== undefined) {
      const href = !inLink && safeUrl(m[6]);
      parent.append(href ? link(m[5], href) : m[0]);
    } else {
      const href = !inLink && safeUrl(m[7]);
      parent.append(href ? link(m[7], href, true) : m[7]);
    }
    text = text.slice(m.index + m[0].length);
  }
}

const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBER = /^\s{0,3}\d{1,9}[.)]\s+(.*)$/;
const HEADING = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/;
const FENCE = /^\s{0,3}```/;

function paragraph(lines) {
  const p = document.createElement("p");
  lines.forEach((line, i) => {
    if (i) p.append(document.createElement("br"));
    appendInline(p, line);
  });
  return p;
}

/** Render Markdown `text` into a DocumentFragment. */
export function render(text) {
  const out = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
    } else if (FENCE.test(line)) {
      const body = [];
      i++;
      while (i < lines.length && !FENCE.test(lines[i])) body.push(lines[i++]);
      i++; // the closing fence (an unclosed block runs to the end, as while streaming)
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = body.join("\n");
      pre.append(code);
      out.append(pre);
    } else if (BULLET.test(line) || NUMBER.test(line)) {
      const re = BULLET.test(line) ? BULLET : NUMBER;
      const list = document.createElement(re === BULLET ? "ul" : "ol");
      while (i < lines.length && re.test(lines[i])) {
        list.append(wrap("li", re.exec(lines[i])[1]));
        i++;
      }
      out.append(list);
    } else if (HEADING.test(line)) {
      const p = document.createElement("p");
      p.append(wrap("strong", HEADING.exec(line)[1]));
      out.append(p);
      i++;
    } else {
      const para = [];
      while (
        i < lines.length &&
        lines[i].trim() &&
        !FENCE.test(lines[i]) &&
        !BULLET.test(lines[i]) &&
        !NUMBER.test(lines[i]) &&
        !HEADING.test(lines[i])
      ) {
        para.push(lines[i++]);
      }
      out.append(paragraph(para));
    }
  }
  return out;
}
