"""The open_clip backend (`--backend open_clip`, the default)."""

from typoattack.backends.open_clip.model import OpenClipBackend, OpenClipModel

__all__ = ["OpenClipBackend", "OpenClipModel"]
