from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from feedpub.config import load_site

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_FILES = ["feedpub.yaml", "schedule.yaml", "content", "templates"]


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    """A fresh copy of the bundled example site."""
    root = tmp_path / "site"
    root.mkdir()
    for name in EXAMPLE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy2(source, root / name)
    return root


@pytest.fixture
def site(site_dir: Path):
    return load_site(site_dir)


def write_article(site_dir: Path, name: str, front: str, body: str = "Body text.\n") -> Path:
    path = site_dir / "content" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{front.strip()}\n---\n\n{body}", encoding="utf-8")
    return path
