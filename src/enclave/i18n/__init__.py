"""Translation of user-facing CLI messages and web pages.

Messages are written in English in the code and marked with ``_()``; the English text is the
message id. Catalogues are JSON files under ``locales/<locale>/``, one per subsystem plus
``cli.json`` for the --help texts of every command, each mapping an English message id to
its translation. A message missing from a catalogue falls
back to English. Placeholders use ``str.format`` syntax and are filled after translation::

    echo(_("Model {name} loaded in {seconds:.1f} s", name=name, seconds=elapsed))

A message with a count uses ``ngettext()``, which picks the English singular or plural form
first. Each form is its own catalogue entry, and Chinese gives both the same translation.

The locale comes from ``set_locale()`` (the ``server.locale`` setting), else from the
environment (LC_ALL, LC_MESSAGES, LANG), else English.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from typing import Any

SUPPORTED_LOCALES = ("en", "zh_CN")

_selected: str | None = None


def normalize_locale(value: str) -> str:
    """Map a locale name such as ``zh-CN``, ``zh_CN.UTF-8`` or ``zh`` to a supported one."""
    name = value.split(".")[0].split("@")[0].replace("-", "_")
    if name.lower().startswith("zh"):
        return "zh_CN"
    return "en"


def set_locale(value: str | None) -> None:
    """Select the locale explicitly; ``None`` goes back to the environment's."""
    global _selected
    _selected = normalize_locale(value) if value else None


def current_locale() -> str:
    """Return the locale in force: the explicit one, else the environment's, else en."""
    if _selected:
        return _selected
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if value and value not in ("C", "POSIX"):
            return normalize_locale(value)
    return "en"


@cache
def catalogue(locale: str) -> dict[str, str]:
    """Return every message of one locale, merged from its JSON files."""
    merged: dict[str, str] = {}
    folder = resources.files("enclave.i18n").joinpath("locales", locale)
    if not folder.is_dir():
        return merged
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".json"):
            merged.update(json.loads(entry.read_text(encoding="utf-8")))
    return merged


def _(message: str, /, **values: Any) -> str:
    """Translate ``message`` into the current locale and fill in its placeholders."""
    locale = current_locale()
    text = catalogue(locale).get(message, message) if locale != "en" else message
    return text.format(**values) if values else text


def ngettext(singular: str, plural: str, count: int, /, **values: Any) -> str:
    """Translate the English singular form if ``count`` is 1, else the plural form."""
    return _(singular if count == 1 else plural, **values)
