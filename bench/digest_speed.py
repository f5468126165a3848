"""Time `feedpub digest` composing a 20-article issue, as a whole process.

Prints the wall time of the process and the seconds of each step it reports
(build, select, render, inline, text, store, archive).

    python bench/digest_speed.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "content" / "cofondateur-xai-quitte-entreprise.md"


def make_site(root: Path, count: int) -> None:
    for name in ("feedpub.yaml", "templates"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / name)
    (root / "schedule.yaml").write_text(
        "timezone: Europe/Paris\ndigests:\n  bench:\n    title: Bench\n"
        f"    max_articles: {count}\n", encoding="utf-8")
    content = root / "content"
    content.mkdir()
    sample = SAMPLE.read_text(encoding="utf-8")
    for index in range(count):
        text = sample.replace('title: "', f'title: "{index + 1}. ').replace(
            "2025-08-14", f"2026-10-{index + 1:02d}")
        (content / f"article-{index:02d}.md").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="articles in the issue")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="feedpub-digest-bench-"))
    try:
        make_site(root, args.n)
        subprocess.run([sys.executable, "-m", "feedpub", "build", "--site", str(root)],
                       check=True, stdout=subprocess.DEVNULL)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "feedpub", "digest", "bench", "--timings",
                                 "--site", str(root)], check=True, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        message, steps = result.stdout.strip().splitlines()[-2:]
        print(message)
        html = next((root / "public" / "archive" / "bench").glob("*/index.html")).stat().st_size
        print(f"issue HTML: {html / 1024:.1f} KB")
        for step in steps.split():
            name, seconds = step.split("=")
            print(f"  {name:<8} {seconds:>8}")
        print(f"whole `feedpub digest` process: {elapsed:.2f} s")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
