"""The README's picture: the first screen of a rendered report, as a small PNG.

    python docs/screenshot.py                       # reports/report.html -> docs/images/report.png
    python docs/screenshot.py REPORT.html OUT.png

Run it after the default study (`snakemake --cores 4 --resources gpu=1`). It needs headless
Chromium (Debian's `chromium`, which the test suite uses too) and Pillow (a dependency).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1280, 960)  # the browser's first screen, in CSS pixels
WIDTH = 900  # the committed picture's width: legible on GitHub, a few hundred kB at most


def screenshot(report: Path, out: Path) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("screenshot: no chromium on PATH (Debian: apt-get install chromium)")
    if not report.is_file():
        raise SystemExit(f"screenshot: {report} does not exist: run the study first")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}",
                        report.resolve().as_uri()], check=True, capture_output=True, timeout=120)
        image = Image.open(shot).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128).save(out, optimize=True)  # a palette PNG: a report is mostly flat colour
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    report = Path(args[0]) if args else ROOT / "reports/report.html"
    out = Path(args[1]) if len(args) > 1 else ROOT / "docs/images/report.png"
    print(f"wrote {screenshot(report, out)} ({out.stat().st_size:,} bytes)")
