"""The accessibility audit: axe-core (the npm package, `npm ci` puts it in node_modules/)
run inside a page or a frame by the browser tests.

axe is evaluated through the DevTools protocol, which the pages' strict CSP (no inline
script) does not govern, so the pages are audited exactly as they are served.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.async_api import Frame, Page

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")

RUN = """async ([context, options]) => {
  const results = await window.axe.run(context || document, options);
  return results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({target: n.target, summary: n.failureSummary})),
  }));
}"""


def axe_source() -> str:
    if not AXE.exists():
        raise AssertionError(
            f"{AXE} is missing: run `npm ci --no-audit --no-fund` (make test does)"
        )
    return AXE.read_text(encoding="utf-8")


async def violations(target: Page | Frame, context: Any = None) -> list[dict[str, Any]]:
    """axe's violations in `target` (within `context`, an axe context, when given);
    frames inside it are audited on their own (`iframes: false`)."""
    if not await target.evaluate("() => !!window.axe"):
        await target.evaluate(f"(() => {{ {axe_source()}\n;return !!window.axe; }})()")
    return await target.evaluate(RUN, [context, {"iframes": False}])


async def assert_accessible(target: Page | Frame, where: str, context: Any = None) -> None:
    """No serious or critical axe violation in `target`."""
    found = [v for v in await violations(target, context) if v["impact"] in BLOCKING]
    assert not found, f"{where}: " + json.dumps(found, indent=1)
