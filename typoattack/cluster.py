"""Connecting to a Ray cluster: imported only when a Ray run starts, bounded in time, with Ray's own
connection messages kept out of the user's terminal."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from typoattack.errors import ConfigError, MissingExtraError, missing_extra

RAY_EXTRA = "ray"
"""typoattack's extra that installs Ray and its client (pyproject `optional-dependencies`)."""
RAY_INSTALL_HINT = str(missing_extra("--executor ray", RAY_EXTRA))
RAY_CLIENT_HINT = str(missing_extra("a ray:// address (the Ray Client, grpcio)", RAY_EXTRA))
RAY_CLIENT_PORT = 10001
DEFAULT_RAY_TIMEOUT = 30.0
"""Seconds `--executor ray` waits for the Ray cluster before giving up."""


def import_ray() -> Any:
    """The ray module, with usage statistics off (RAY_USAGE_STATS_ENABLED=0 unless set).

    Raises:
        MissingExtraError: Ray is not installed (the message names the extra that installs it).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise MissingExtraError(RAY_INSTALL_HINT) from None
    return ray


def _split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a `host:port` or `ray://host[:port]` address; None for `auto`, `local` or
    an address without a port (Ray resolves those itself)."""
    client = address.startswith("ray://")
    rest = address[len("ray://"):] if client else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        return (rest, RAY_CLIENT_PORT) if client and rest else None
    host = host.strip("[]")  # an IPv6 literal, [::1]:6379
    return (host, int(port)) if host and port.isdigit() else None


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast when nothing accepts a TCP connection at the address's host and port.

    Raises:
        ConfigError: Connection refused, no route, unknown host, or no answer within `timeout` s.
    """
    target = _split_address(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except socket.timeout:
        raise ConfigError(_unreachable(address, f"no answer within {timeout:g} s")) from None
    except OSError as e:
        raise ConfigError(_unreachable(address, e.strerror or type(e).__name__)) from None


def _unreachable(address: str, why: str) -> str:
    return (f"cannot connect to the Ray cluster at {address} ({why}); check that a Ray cluster runs there "
            "(`ray status` on its head node) and that the address is its head's host:port (GCS port, default "
            f"6379; ray://host:{RAY_CLIENT_PORT} for the Ray Client)")


def connect_ray(address: str | None, timeout: float = DEFAULT_RAY_TIMEOUT) -> Any:
    """Connect to the Ray cluster at `address`, else to the one RAY_ADDRESS names, else start a
    local one (no dashboard); a connection this process already has is kept.

    Gives up after about `timeout` seconds with one line naming the address: first a TCP
    connection to its host and port (refused or unanswered: at once), then `ray.init` itself
    on a helper thread. Ray's own log lines during the attempt go to a file, not the terminal.

    Raises:
        ConfigError: The cluster cannot be reached in time, a `ray://` address without the Ray
            Client installed, or Ray refuses the address.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
    start = time.monotonic()
    if address:
        if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise MissingExtraError(f"{RAY_CLIENT_HINT} (for --ray-address {address})")
        _check_reachable(address, timeout)
    outcome: dict[str, BaseException] = {}

    def init() -> None:
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except BaseException as e:  # handed to the calling thread
            outcome["error"] = e

    with _ray_logs_to_file() as log_path:
        if address:
            worker = threading.Thread(target=init, name="typoattack-ray-init", daemon=True)
            worker.start()
            worker.join(max(timeout - (time.monotonic() - start), 0.5))
            if worker.is_alive():
                # ray.init cannot be interrupted; the thread is a daemon and ends with the process.
                raise ConfigError(f"cannot connect to {where}: something answers there but no Ray cluster did within "
                                  f"{timeout:g} s; check that the address is the head's GCS host:port (`ray status` "
                                  f"on the head node prints it) or raise --ray-timeout (Ray's messages: {log_path})")
        else:
            init()  # starting a local cluster has no address to wait for
    error = outcome.get("error")
    if error is None:
        return ray
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "ray[client]" in message:
        raise MissingExtraError(f"{RAY_CLIENT_HINT} (for --ray-address {address})") from None
    if isinstance(error, (ConnectionError, ValueError, RuntimeError)):
        raise ConfigError(f"cannot connect to {where}: {message}") from None
    raise error


@contextmanager
def _ray_logs_to_file() -> Iterator[Path]:
    """Send what Ray writes to this process's stderr (file descriptor 2, where its C++ core logs
    connection warnings) to a file in the temp folder while connecting; yields that file."""
    log_path = Path(tempfile.gettempdir()) / f"typoattack-ray-connect-{os.getpid()}.log"
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr (e.g. replaced by a test harness): nothing to hide
        yield log_path
        return
    try:
        with open(log_path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield log_path
    finally:
        os.dup2(saved, 2)
        os.close(saved)
