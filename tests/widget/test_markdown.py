"""Markdown in answers is rendered as DOM nodes; markup and scripts in any text stay inert."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from tests.accounts import PASSWORD, unique_email
from tests.widget.browser import (
    INJECTION_QUESTION,
    MARKDOWN_QUESTION,
    PWN_IMG,
    PWN_SCRIPT,
    ChatServer,
    HostSite,
    ask,
    last_reply,
    open_widget,
    sign_up,
    wait_reply,
)

# Renders each case with the widget's own module, in the widget's own page.
RENDER = """async (cases) => {
  const { render } = await import("/static/frame/markdown.js");
  return cases.map((text) => {
    const box = document.createElement("div");
    box.append(render(text));
    return box.innerHTML;
  });
}"""

CASES = [
    ("**bold** and *it* and _it_", "<p><strong>bold</strong> and <em>it</em> and <em>it</em></p>"),
    ("use `a<b>` here", "<p>use <code>a&lt;b&gt;</code> here</p>"),
    ("one\ntwo\n\nthree", "<p>one<br>two</p><p>three</p>"),
    ("- a\n- **b**", "<ul><li>a</li><li><strong>b</strong></li></ul>"),
    ("1. a\n2. b", "<ol><li>a</li><li>b</li></ol>"),
    ("```\n<script>x()</script>\n```", "<pre><code>&lt;script&gt;x()&lt;/script&gt;</code></pre>"),
    ("# Title", "<p><strong>Title</strong></p>"),
    (
        "[docs](https://example.com/a?b=1)",
        '<p><a href="https://example.com/a?b=1" target="_blank" '
        'rel="noopener noreferrer nofollow">docs</a></p>',
    ),
    (
        "see http://example.com/x.",
        '<p>see <a href="http://example.com/x" target="_blank" '
        'rel="noopener noreferrer nofollow">http://example.com/x</a>.</p>',
    ),
    ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
    ("[x](JaVaScRiPt:alert(1))", "<p>[x](JaVaScRiPt:alert(1))</p>"),
    ("[x](data:text/html,hi)", "<p>[x](data:text/html,hi)</p>"),
    ("[**https://a.example**](https://b.example)", None),
    (PWN_IMG, "<p>&lt;img src=x onerror=\"window.__pwned = 'img'\"&gt;</p>"),
    (PWN_SCRIPT, "<p>&lt;script&gt;window.__pwned = 'script'&lt;/script&gt;</p>"),
    ("<a href=javascript:1>x</a>", "<p>&lt;a href=javascript:1&gt;x&lt;/a&gt;</p>"),
    ("**unclosed and `open", "<p>**unclosed and `open</p>"),
]


async def test_render_cases(page: Page, chat_server: ChatServer) -> None:
    await page.goto(f"{chat_server.origin}/static/widget-frame.html")
    rendered = await page.evaluate(RENDER, [text for text, _ in CASES])
    for (text, expected), html in zip(CASES, rendered, strict=True):
        if expected is not None:
            assert html == expected, text
    nested = rendered[CASES.index(("[**https://a.example**](https://b.example)", None))]
    assert nested.count("<a ") == 1 and 'href="https://b.example/"' in nested
    assert await page.evaluate("() => window.__pwned") is None


@pytest.mark.parametrize(
    "text",
    ["[x](https://e.x/" + "(" * 2000, "*" * 5000, "`" * 3000 + "a", "_a" * 3000, "- " * 3000],
)
async def test_render_is_fast_on_hostile_input(page: Page, chat_server: ChatServer, text) -> None:
    await page.goto(f"{chat_server.origin}/static/widget-frame.html")
    took = await page.evaluate(
        """async (text) => {
          const { render } = await import("/static/frame/markdown.js");
          const t = performance.now();
          for (let i = 0; i < 20; i++) render(text);
          return (performance.now() - t) / 20;
        }""",
        text,
    )
    assert took < 50, f"{took:.1f} ms per render"


async def test_answers_and_messages_stay_inert(
    page: Page, chat_server: ChatServer, host_site: HostSite
) -> None:
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    await sign_up(frame, unique_email("inject"), PASSWORD)

    turn = await ask(frame, MARKDOWN_QUESTION)
    await wait_reply(frame, turn)
    reply = last_reply(frame).locator(".body")
    assert await reply.locator("strong").all_inner_texts() == ["bold words"]
    assert await reply.locator("em").all_inner_texts() == ["slanted words"]
    assert "inline code" in await reply.locator("code").all_inner_texts()
    assert await reply.locator("li").all_inner_texts() == ["first point", "second point"]
    links = reply.locator("a")
    assert await links.count() == 1
    assert await links.get_attribute("href") == "https://example.com/guide"
    assert "noopener" in (await links.get_attribute("rel") or "")
    assert "[this](javascript:alert(1))" in await reply.inner_text()

    turn = await ask(frame, f"{INJECTION_QUESTION} {PWN_IMG} {PWN_SCRIPT}")
    await wait_reply(frame, turn)
    answer = await last_reply(frame).locator(".body").inner_text()
    assert PWN_IMG in answer and PWN_SCRIPT in answer
    question = await frame.locator(".msg.user").last.inner_text()
    assert PWN_IMG in question and PWN_SCRIPT in question
    log = frame.locator("#log")
    assert await log.locator("img, script, iframe, object, [onerror]").count() == 0
    hrefs = await log.locator("a").evaluate_all("els => els.map(a => a.href)")
    assert all(h.startswith("https://") for h in hrefs), hrefs
    assert await frame.evaluate("() => window.__pwned") is None
    assert await page.evaluate("() => window.__pwned") is None
