"""The errors feedpub reports to people, each formatted as one line.

    FeedpubError                 anything a user can fix; str() is the message
    ├── ConfigError              "feedpub.yaml: feeds.items: must be a whole number"
    ├── ContentError             "content/hello.md:3: date: not a date"
    └── TemplateError            "templates/article.html.j2:12: 'nope' is undefined"
"""

from __future__ import annotations


class FeedpubError(Exception):
    """An error caused by the site's files or the user's command, not by a bug."""


class ConfigError(FeedpubError):
    """A setting in a YAML settings file is missing or has a bad value."""

    def __init__(self, file: str, key: str, reason: str, *, line: int | None = None) -> None:
        self.file, self.key, self.reason, self.line = file, key, reason, line
        where = f"line {line}: " if line is not None and not key else ""
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {where}{reason}")

    def located(self) -> str:
        """The message as `feedpub check` prints it: "feedpub.yaml:7: email.smtp.port: reason"."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class ContentError(FeedpubError):
    """An article cannot be published as written."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")


class TemplateError(FeedpubError):
    """A template failed while rendering: an undefined name, a filter given the wrong value."""
