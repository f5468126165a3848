"""Reading a YAML settings file: typed values, errors that name the key, and where each key is written.

A Section raises the first ConfigError it meets; given a PROBLEMS list it
records every one instead and goes on with the default, so that `feedpub
check` can report all the mistakes of a file in one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from .errors import ConfigError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
T = TypeVar("T")


def yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(0-based line, description) of a YAML error.

    Where an unclosed bracket or quote began says more than where YAML gave up.
    """
    mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
    return (mark.line if mark else None), getattr(exc, "problem", None) or "syntax error"


def read_yaml(path: Path, label: str) -> dict[str, Any]:
    """Read a YAML mapping, turning syntax errors into a one-line ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(label, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(label, "", f"cannot be read ({exc})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc)
        raise ConfigError(label, "", f"not valid YAML ({problem})",
                          line=line + 1 if line is not None else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(label, "", "must be a mapping of settings")
    return data


def key_lines(path: Path) -> dict[str, int]:
    """The 1-based line of each key of a YAML file, by dotted path ("email.smtp.port")."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            name = prefix + str(key.value)
            lines.setdefault(name, key.start_mark.line + 1)
            walk(value, name + ".")

    walk(root, "")
    return lines


def locate(error: ConfigError, lines: dict[str, int]) -> ConfigError:
    """ERROR with the line of its key, or of the nearest enclosing key that is written."""
    if error.line is not None or not error.key:
        return error
    parts = error.key.split(".")
    while parts:
        if (line := lines.get(".".join(parts))) is not None:
            return ConfigError(error.file, error.key, error.reason, line=line)
        parts.pop()
    return error


class Section:
    """Typed access to one mapping of a settings file, with errors naming the key."""

    def __init__(self, data: Any, file: str, prefix: str = "", problems: list[ConfigError] | None = None) -> None:
        self.file, self.prefix, self.problems = file, prefix, problems
        self.used: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(ConfigError(file, prefix.rstrip("."), "must be a mapping"))
            data = {}
        self.data = data

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self.prefix + key, reason)

    def fail(self, error: ConfigError) -> None:
        """Raise ERROR, or when collecting, record it so the caller goes on with a default."""
        if self.problems is None:
            raise error
        self.problems.append(error)

    def guard(self, default: T, read: Callable[..., T], *args: Any) -> T:
        """READ(*ARGS), or DEFAULT when it raised a ConfigError that this section collects."""
        try:
            return read(*args)
        except ConfigError as exc:
            self.fail(exc)
            return default

    def _get(self, key: str, default: Any, required: bool) -> Any:
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(self.error(key, "is required"))
            return default
        return value

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self._get(key, default, required)
        if value is default:
            return value
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(self.error(key, f"{value!r} is not text"))
            return default
        return str(value).strip()

    def int(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self._get(key, default, False)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(self.error(key, f"{value!r} is not a whole number"))
            return default
        if value < minimum:
            self.fail(self.error(key, f"{value} is below the minimum of {minimum}"))
            return default
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key, default, False)
        if not isinstance(value, bool):
            self.fail(self.error(key, f"{value!r} is not true or false"))
            return default
        return value

    def section(self, key: str) -> Section:
        self.used.add(key)
        return Section(self.data.get(key), self.file, f"{self.prefix}{key}.", self.problems)

    def check_unknown(self) -> None:
        for key in sorted(set(map(str, self.data)) - self.used):
            self.fail(self.error(key, "unknown setting"))
