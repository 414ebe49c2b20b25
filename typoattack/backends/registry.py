"""The backends by name: the one place that names every model family.

A new backend is one module with a `Backend` subclass (zero-shot models) or a `ChatBackend`
subclass (vision-language chat models) plus one line here; its module is imported on first use.
"""

from __future__ import annotations

import functools
import importlib

from typoattack.backends.base import Backend, ChatBackend
from typoattack.errors import ConfigError, suggest

DEFAULT_BACKEND = "open_clip"
_BACKENDS: dict[str, str] = {
    "open_clip": "typoattack.backends.open_clip:OpenClipBackend",
    "transformers": "typoattack.backends.transformers:TransformersBackend",
}
_CHAT_BACKENDS: dict[str, str] = {
    "transformers": "typoattack.backends.transformers.chat:TransformersChatBackend",
}


def register_backend(name: str, target: str) -> None:
    """Make a model family available as `--backend NAME` in this process: `target` is
    `package.module:BackendClass` (a `typoattack.backends.base.Backend` subclass).

    Raises:
        ConfigError: `target` is not of the form `module:Class`.
    """
    if ":" not in target:
        raise ConfigError(f"backend target {target!r} must be `package.module:BackendClass`")
    _BACKENDS[name] = target
    get_backend.cache_clear()


def list_backends() -> list[str]:
    """The `--backend` values."""
    return list(_BACKENDS)


@functools.cache
def get_backend(name: str) -> Backend:
    """The backend called `name` (its module is imported on first use).

    Raises:
        ConfigError: No backend has that name (the message lists them).
    """
    if name not in _BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; use one of {', '.join(_BACKENDS)}.{suggest(name, _BACKENDS)}")
    module, _, cls = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def list_chat_backends() -> list[str]:
    """The names of the chat backends (vision-language models of the vlm task)."""
    return list(_CHAT_BACKENDS)


@functools.cache
def get_chat_backend(name: str) -> ChatBackend:
    """The chat backend called `name` (its module is imported on first use).

    Raises:
        ConfigError: No chat backend has that name (the message lists them).
    """
    if name not in _CHAT_BACKENDS:
        raise ConfigError(f"unknown chat backend {name!r}; use one of {', '.join(_CHAT_BACKENDS)}."
                          f"{suggest(name, _CHAT_BACKENDS)}")
    module, _, cls = _CHAT_BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
