"""Offline behaviour of the Hugging Face Hub client (weights and datasets)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def is_hub_reachable(timeout: float = 3.0) -> bool:
    """True when huggingface.co accepts a TCP connection within `timeout` seconds."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline_if_unreachable() -> Iterator[None]:
    """Make huggingface_hub use only its cache while the Hub cannot be reached.

    Without this, a download attempt with no network spends about half a minute in retries
    before it fails.
    """
    import huggingface_hub.constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        yield
        return
    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = not is_hub_reachable()
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous
