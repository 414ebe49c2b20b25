"""Worker processes that do not outlive their parent: the decoding and mask-solving pools call
`die_with_parent` first, so a run killed with SIGKILL or SIGTERM leaves no worker holding its
files or its terminal.

Importable without torch, PIL or pandas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent(*_: Any) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux `prctl(PR_SET_PDEATHSIG)`),
    and exit at once if the parent is already gone. Elsewhere a no-op. Takes and ignores any
    arguments, so it serves as a DataLoader `worker_init_fn` and a pool `initializer`."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
