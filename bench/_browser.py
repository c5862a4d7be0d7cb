"""The headless Chromium that the console's benches and browser tests both drive.

Debian's ``chromium`` package, not a Playwright download: CI installs it with apt, and the
registries Playwright fetches browsers from are not reachable. The flags keep a run free of
network traffic of the browser's own (updates, sync) so that timings are the page's.
"""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
