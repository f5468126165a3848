"""Files an article points at inside the content folder: images that must exist."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

# ![alt](target "title"): the target ends at white space or the closing parenthesis.
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")


def local_target(content_dir: Path, source: str, target: str) -> Path | None:
    """The file a relative TARGET in SOURCE names, or None when it is not a local file reference.

    A target that climbs out of the content folder names no file there: it is
    returned as a path that does not exist, so it is reported as missing.
    """
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return None
    folder = PurePosixPath(source).parent
    root = content_dir.resolve()
    path = (root / folder / unquote(parts.path)).resolve()
    return path if path.is_relative_to(root) else root / "\0outside"


def body_images(body: str, first_line: int):
    """(line, target) for each inline image in BODY, outside fenced code blocks."""
    fence = None
    for number, line in enumerate(body.split("\n"), start=first_line):
        if match := _FENCE.match(line):
            marker = match.group(1)[0]
            fence = None if fence == marker else (fence or marker)
            continue
        if fence is None:
            for image in _IMAGE.finditer(line):
                yield number, image.group(1)


def missing_images(content_dir: Path, label: str, source: str, body: str, first_line: int,
                   front_image: tuple[int, str] | None) -> list[str]:
    """'content/a.md:LINE: image X: file not found' for each image no file answers."""
    found = list(body_images(body, first_line))
    if front_image:
        found.insert(0, front_image)
    problems = []
    for line, target in found:
        path = local_target(content_dir, source, target)
        if path is not None and not path.is_file():
            problems.append(f"{label}:{line}: image {target}: file not found")
    return problems
