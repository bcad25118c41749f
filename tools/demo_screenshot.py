"""Retake docs/demo.png: the demo's Compare tab with the shipped models, in a headless browser.

Starts `automoe.serve.app.launch` on the model folders in models/ (the supernet is skipped, as by
`automoe serve`), types a test sentence into the Compare tab, waits for every model's row and saves
a screenshot; `--routing` also saves the Routing tab of the default model (an AutoMoE model when
one is shipped). Needs Debian chromium (/usr/bin/chromium) and the playwright package, as the
browser test does; no browser download.

    python tools/demo_screenshot.py [--models models] [--out docs/demo.png] [--routing docs/demo_routing.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SENTENCE = "And when they had prayed, the place was shaken where they were assembled together."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"), help="folder of shipped model folders")
    p.add_argument("--data", default=str(ROOT / "data" / "bible-en-de"), help="dataset folder (examples)")
    p.add_argument("--out", default=str(ROOT / "docs" / "demo.png"))
    p.add_argument("--routing", default=None, help="also save the Routing tab here")
    p.add_argument("--sentence", default=SENTENCE)
    p.add_argument("--engine", default="onnxruntime-int8", help="the Compare tab's engine (as the demo lists it)")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"needs Debian chromium at {CHROMIUM} (apt-get install -y chromium)")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    from automoe.serve.app import free_port, launch
    from automoe.serve.demo import discover_models

    models = discover_models(args.models)
    port = free_port()
    demo = launch(models, port=port, data_dir=args.data if Path(args.data).is_dir() else None,
                  prevent_thread_lock=True, quiet=True)
    chrome = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=chrome)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 820})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=60_000)
                page.get_by_role("tab", name="Compare").click()
                box = page.locator("#compare-input textarea")
                box.wait_for(timeout=60_000)
                box.fill(args.sentence)
                engine = page.locator("#compare-engine input")
                engine.click()
                engine.fill(args.engine)
                page.keyboard.press("Enter")
                page.locator("#compare-btn").click()
                # every model translated: each name in the table (the first run loads them all)
                names = json.dumps(list(models))
                page.wait_for_function(f"() => {{ const t = document.querySelector('#compare-table'); "
                                       f"return t && {names}.every(n => t.innerText.includes(n)); }}", timeout=600_000)
                page.wait_for_timeout(500)
                page.screenshot(path=args.out, full_page=True)
                if args.engine not in page.locator("#compare-table").inner_text() + page.content():
                    raise SystemExit(f"the Compare tab did not run on {args.engine}")
                print(f"wrote {args.out} ({len(models)} models on {args.engine}: {', '.join(models)})")
                if args.routing:
                    page.get_by_role("tab", name="Routing").click()
                    page.locator("#routing-input textarea").fill("Jesus wept.")
                    page.locator("#routing-btn").click()
                    page.locator("#routing-view table.routing").first.wait_for(timeout=120_000)
                    page.screenshot(path=args.routing, full_page=True)
                    print(f"wrote {args.routing}")
            finally:
                browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
