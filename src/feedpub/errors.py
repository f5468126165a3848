"""The errors feedpub reports to people, each formatted as one line.

    FeedpubError                 anything a user can fix; str() is the message
    ├── ConfigError              "feedpub.yaml: feeds.items: must be a whole number"
    └── ContentError             "content/hello.md:3: date: not a date"
"""

from __future__ import annotations


class FeedpubError(Exception):
    """An error caused by the site's files or the user's command, not by a bug."""


class ConfigError(FeedpubError):
    """A setting in a YAML settings file is missing or has a bad value."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")


class ContentError(FeedpubError):
    """An article cannot be published as written."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")
