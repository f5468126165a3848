"""Time `feedpub build` on a generated site of N articles shaped like the sample.

Prints the full build from empty state, the rebuild after adding one article,
a rebuild with nothing changed, and the peak memory of the build processes.

    python bench/build_speed.py            # N = 10,000
    python bench/build_speed.py -n 2000 --keep bench-site
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from statistics import median
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "intelligence artificielle modèle données équipe recherche startup investisseurs stratégie "
    "développement technologie marché talents innovation concurrence produit calcul réseau "
    "gouvernance croissance plateforme utilisateurs"
).split()
TAGS = [f"Sujet {i}" for i in range(50)]


def sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 18))
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", " ?", " !"])


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(2, 4)))


def article(index: int, rng: random.Random) -> str:
    """About 8 KB of Markdown: lede, sections, bullet lists and a FAQ."""
    tags = ", ".join(rng.sample(TAGS, rng.randint(1, 3)))
    day = 1 + index % 28
    parts = [
        "---",
        f'title: "Article numéro {index} : {sentence(rng)[:40]}"',
        f"date: 2025-{1 + index % 12:02d}-{day:02d}T{index % 24:02d}:{index % 60:02d}:00+01:00",
        f"tags: [{tags}]",
        "---",
        "",
    ]
    parts += [paragraph(rng) + "\n" for _ in range(3)]
    for section in range(4):
        parts.append(f"## Section {section} de l’article {index}\n")
        parts += [paragraph(rng) + "\n" for _ in range(2)]
        if section % 2 == 0:
            parts += [f"- {sentence(rng)}" for _ in range(4)] + [""]
    parts.append("## FAQ\n")
    for q in range(5):
        parts.append(f"### Question {q} sur le sujet {index} ?\n\n{paragraph(rng)}\n")
    return "\n".join(parts)


def generate(site: Path, n: int) -> None:
    for name in ("feedpub.yaml", "templates"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, site / name)
    content = site / "content"
    content.mkdir()
    rng = random.Random(20261130)
    for index in range(n):
        (content / f"article-{index:05d}.md").write_text(article(index, rng), encoding="utf-8")


def timed_build(site: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "feedpub", "build", "--site", str(site)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="number of articles")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each rebuild (the median is shown)")
    args = parser.parse_args()
    site = args.keep or Path(tempfile.mkdtemp(prefix="feedpub-bench-"))
    site.mkdir(parents=True, exist_ok=True)
    try:
        generate(site, args.n)
        size = sum(p.stat().st_size for p in (site / "content").iterdir()) / args.n
        print(f"{args.n} articles, {size / 1024:.1f} KB of Markdown each")
        full = timed_build(site)
        print(f"full build from empty state:   {full:7.2f} s")
        unchanged = sorted(timed_build(site) for _ in range(args.repeat))
        print(f"rebuild, nothing changed:      {median(unchanged):7.2f} s  (median of {args.repeat}, "
              f"{unchanged[0]:.2f}–{unchanged[-1]:.2f})")
        added = []
        for extra in range(args.repeat):
            (site / "content" / f"zz-new-{extra}.md").write_text(article(args.n + extra, random.Random(extra)),
                                                                encoding="utf-8")
            added.append(timed_build(site))
        added.sort()
        print(f"rebuild after adding one:      {median(added):7.2f} s  (median of {args.repeat}, "
              f"{added[0]:.2f}–{added[-1]:.2f})")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak memory of one process:    {peak:7.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(site)


if __name__ == "__main__":
    main()
