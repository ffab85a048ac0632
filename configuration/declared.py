"""Settings declared once (name, default, meaning), read with errors that say what to set, and documented.

A package lists its settings as `Setting`s (environment variables) or `Flag`s (command-line
options). A setting's `read` says how to parse it (`text`, `choice(...)`, `boolean`, `number(...)`)
and `Environment.values()` reads them all into `{attribute: value}`, the attribute being the name in
lower case: a settings dataclass takes them as they are. `add_flags` turns flags into argparse
options, and `settings_table` writes either kind as the Markdown table its docs page holds between
two markers (`<!-- settings:NAME -->` ... `<!-- /settings:NAME -->`); a test compares the two.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

N = TypeVar("N", int, float)
Reader = Callable[["Environment", str], Any]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and says what to set."""


@dataclass(frozen=True)
class Setting:
    """One setting: its name, its default as text (None: required) and what it means.

    `used_by` is an optional column for the docs (the Function App's: "host", "bindings" or "functions").
    """

    name: str
    default: str | None
    description: str
    used_by: str = ""
    # How Environment.values() parses it; None: read elsewhere (by the host, or together with others).
    read: Reader | None = field(default=None, compare=False)

    @property
    def attribute(self) -> str:
        """The setting's name in Python: `SEND_CONCURRENCY` -> `send_concurrency`."""
        return self.name.lower()

    @property
    def documented_default(self) -> str:
        """The default as the docs show it: `value`, (empty) or required."""
        if self.default is None:
            return "required"
        return f"`{self.default}`" if self.default else "(empty)"


@dataclass(frozen=True)
class Flag(Setting):
    """A command-line option: `parse` reads its value; `action` for switches and repeatable options."""

    parse: Callable[[str], Any] | None = None
    action: str | None = None
    metavar: str | None = None
    # The value argparse starts from; `default`, when given, is how the docs say it instead.
    value: Any = field(default=None, compare=False)

    @property
    def shown_default(self) -> str:
        """The default as help and docs say it: the declared text, else the value."""
        return self.default or ("" if self.value is None else str(self.value))

    @property
    def documented_default(self) -> str:
        if self.action == "store_true":
            return "off"
        if self.action == "append":
            return "none"
        return f"`{self.shown_default}`" if self.shown_default else "(empty)"


def text(environment: Environment, name: str) -> str:
    """A Reader: the value as text, stripped; empty means the default."""
    return environment.text(name)


def boolean(environment: Environment, name: str) -> bool:
    """A Reader: true or false (also 1/0, yes/no)."""
    return environment.flag(name)


def choice(*options: str) -> Reader:
    """A Reader: one of `options`."""
    return lambda environment, name: environment.choice(name, options)


def number(minimum: float, whole: bool = False) -> Reader:
    """A Reader: a number (an int when `whole`) of at least `minimum`."""

    def read(environment: Environment, name: str) -> float:
        value = environment.number(name, minimum, whole)
        return int(value) if whole else value

    return read


def webhook_variable(webhook: str, part: str) -> str:
    """`<PREFIX>_WEBHOOK_<PART>` for webhook `webhook`: `webhook_variable("azure-storage", "URL")`."""
    prefix = re.sub(r"[^A-Z0-9]+", "_", webhook.upper()).strip("_")
    return f"{prefix}_WEBHOOK_{part}"


def positive(kind: Callable[[str], N]) -> Callable[[str], N]:
    """An argparse type: `kind` of the text, refused unless greater than 0."""

    def parse(text: str) -> N:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def add_flags(parser: argparse.ArgumentParser, flags: Iterable[Flag]) -> None:
    """Add each flag to `parser`, its help the declared description and default."""
    for flag in flags:
        options: dict[str, Any] = {"help": flag.description.replace("%", "%%")}
        if flag.action:
            options["action"] = flag.action
            if flag.action == "append":
                options["default"] = []
        else:
            options["type"] = flag.parse or str
            options["default"] = flag.value
            if flag.shown_default:
                options["help"] += f" (default: {flag.shown_default.replace('%', '%%')})"
        if flag.metavar:
            options["metavar"] = flag.metavar
        parser.add_argument(flag.name, **options)


class Environment:
    """Reads declared settings from `environ`: every name read must be declared; empty means the default."""

    def __init__(self, settings: Iterable[Setting], environ: Mapping[str, str]) -> None:
        self.declared = {setting.name: setting for setting in settings}
        self.environ = environ

    def values(self) -> dict[str, Any]:
        """Every declared setting that has a `read`, parsed, by attribute; a SettingsError names a bad one."""
        return {
            setting.attribute: setting.read(self, setting.name)
            for setting in self.declared.values()
            if setting.read is not None
        }

    def text(self, name: str) -> str:
        value = self.environ.get(name, "").strip()
        return value or (self.declared[name].default or "")

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in options:
            raise SettingsError(f"{name} is {value!r}; set it to one of: {', '.join(options)}.")
        return value

    def flag(self, name: str) -> bool:
        value = self.text(name).lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError(f"{name} is {value!r}; set it to true or false.")
        return value in ("true", "1", "yes")

    def number(self, name: str, minimum: float, whole: bool = False) -> float:
        value = self.text(name)
        try:
            number: float | None = int(value) if whole else float(value)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number) or number < minimum:
            kind = "a whole number" if whole else "a number"
            raise SettingsError(f"{name} is {value!r}; set it to {kind} of at least {minimum:g}.")
        return number


def settings_table(settings: Iterable[Setting], heading: str = "Setting") -> str:
    """The Markdown table of `settings` for their docs page (a `used_by` column if any has one)."""
    settings = list(settings)
    used_by = any(setting.used_by for setting in settings)
    columns = [heading, "Default", *(["Used by"] if used_by else []), "Meaning"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for setting in settings:
        cells = [f"`{setting.name}`", setting.documented_default]
        cells += [setting.used_by] if used_by else []
        lines.append("| " + " | ".join([*cells, setting.description]) + " |")
    return "\n".join(lines)


def generated_block(page: str, name: str) -> str:
    """What `page` holds between `<!-- settings:NAME -->` and `<!-- /settings:NAME -->`, stripped."""
    start, end = f"<!-- settings:{name} -->", f"<!-- /settings:{name} -->"
    if start not in page or end not in page:
        raise SettingsError(f"the page has no {start} ... {end} block")
    return page[page.index(start) + len(start) : page.index(end)].strip()


def with_generated_block(page: str, name: str, content: str) -> str:
    """`page` with its `settings:NAME` block replaced by `content`."""
    generated_block(page, name)  # both markers are there
    start = page.index(f"<!-- settings:{name} -->") + len(f"<!-- settings:{name} -->")
    end = page.index(f"<!-- /settings:{name} -->")
    return f"{page[:start]}\n{content}\n{page[end:]}"
