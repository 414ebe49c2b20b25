"""Executors: where the evaluation cells of a run are computed.

Both hand each cell's records back to the driver (`on_result`), which commits them as the same
atomic chunk files, so a run is resumable whichever executor computed it. They run eval's cells by
default, or another pipeline's (`CellKind`: `typoattack.running.real_cells.REAL_CELLS`).

- `LocalExecutor`: cell after cell in this process, one model loaded at a time.
- `RayExecutor`: one Ray task per cell, with one GPU where the cluster has GPUs (one CPU
  otherwise); a worker process keeps its model between cells and reads canvases from its node's
  canvas cache (decoding there on first use); Ray retries a task whose worker dies.

Ray is imported only when a Ray run starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from typoattack.config.types import DEFAULT_RAY_TIMEOUT, Executor, RunConfig
from typoattack.errors import ConfigError, TypoAttackError
from typoattack.running.cells import CellTask, create_model_context, evaluate_cell, run_cell
from typoattack.running.progress import ProgressReporter

if TYPE_CHECKING:
    from typoattack.config.real import RealConfig

RAY_INSTALL_HINT = "--executor ray needs Ray, which is not installed: pip install 'typoattack[ray]'"
RAY_CLIENT_HINT = "a ray:// address needs the Ray Client, which is not installed: pip install 'typoattack[ray]'"
RAY_CLIENT_PORT = 10001
"""The Ray Client server's default port (a `ray://host` address without one)."""
MAX_RETRIES = 3
"""Times Ray reruns a cell whose worker process died (a lost node, an out-of-memory kill)."""
FAULT_MARKER_ENV = "TYPOATTACK_FAULT_MARKER"
"""Fault injection for the tests: when this names an existing file, the first Ray task to see it
removes it and kills its worker process (Ray then retries the task)."""


class CellExecutor(Protocol):
    """What the runner needs from an executor."""

    def run(self, tasks: Sequence[Any], on_result: Callable[[Any], None],
            progress: ProgressReporter) -> None:
        """Evaluate every task (a `CellTask`, or the task of another `CellKind`); call `on_result`
        in the driver process as each cell finishes."""
        ...


def _load_eval_context(task: CellTask, progress: ProgressReporter) -> Any:
    return create_model_context(task.cfg, task.model_index, task.indices, progress)


@dataclass(frozen=True)
class CellKind:
    """How the cells of one pipeline are computed (eval's by default; `real` has its own).

    A task has `model_index` and `n_jobs`; a context (a loaded model) has `model_index`.

    Attributes:
        load: (task, progress) -> the model context of the task's model, in this process.
        evaluate: (context, task, advance) -> the cell's result.
        run: task -> result, loading (or reusing) the model in the calling process; a
            module-level function, so Ray can send it to its workers.
    """

    load: Callable[[Any, ProgressReporter], Any]
    evaluate: Callable[[Any, Any, Any], Any]
    run: Callable[[Any], Any]


EVAL_CELLS = CellKind(_load_eval_context, evaluate_cell, run_cell)


class LocalExecutor:
    """Evaluate the cells one after another in this process."""

    def __init__(self, kind: CellKind = EVAL_CELLS) -> None:
        self.kind = kind

    def run(self, tasks: Sequence[Any], on_result: Callable[[Any], None],
            progress: ProgressReporter) -> None:
        advance = progress.start(f"Evaluating {len(tasks)} cells", sum(t.n_jobs for t in tasks))
        ctx = None
        for task in tasks:
            if ctx is None or ctx.model_index != task.model_index:
                ctx = None  # frees the previous model before loading the next
                ctx = self.kind.load(task, progress)
            on_result(self.kind.evaluate(ctx, task, advance))


def import_ray() -> Any:
    """The ray module, with usage statistics off (RAY_USAGE_STATS_ENABLED=0 unless set).

    Raises:
        ConfigError: Ray is not installed (the message says how to install it).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_INSTALL_HINT) from None
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
            raise ConfigError(f"{RAY_CLIENT_HINT} (for --ray-address {address})")
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
        raise ConfigError(f"{RAY_CLIENT_HINT} (for --ray-address {address})") from None
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


def _run_cell_task(task: Any, cell_fn: Callable[[Any], Any] = run_cell) -> Any:
    """The body of a Ray task (`cell_fn`: the `CellKind.run` of the run's pipeline)."""
    marker = os.environ.get(FAULT_MARKER_ENV)
    if marker:
        try:
            os.remove(marker)
        except FileNotFoundError:
            pass
        else:
            os._exit(1)
    return cell_fn(task)


class RayExecutor:
    """Evaluate each cell as a Ray task; one progress bar over all cells on the driver."""

    def __init__(self, address: str | None, kind: CellKind = EVAL_CELLS, timeout: float = DEFAULT_RAY_TIMEOUT) -> None:
        self.address = address
        self.kind = kind
        self.timeout = timeout

    def run(self, tasks: Sequence[Any], on_result: Callable[[Any], None],
            progress: ProgressReporter) -> None:
        ray = connect_ray(self.address, self.timeout)
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        remote = ray.remote(_run_cell_task).options(num_cpus=1, num_gpus=1 if has_gpus else 0,
                                                    max_retries=MAX_RETRIES)
        progress.log(f"Ray: {len(tasks)} cells on {_describe_cluster(ray)}")
        advance = progress.start(f"Evaluating {len(tasks)} cells on Ray", sum(t.n_jobs for t in tasks))
        pending = {remote.remote(task, self.kind.run): task for task in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    on_result(_get_result(ray, ref))
                    advance(task.n_jobs)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def _get_result(ray: Any, ref: Any) -> Any:
    """A task's result; a user error raised in the worker comes back as that error (one line)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, TypoAttackError):
            raise cause from None
        raise


def _describe_cluster(ray: Any) -> str:
    resources = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    return (f"{nodes} node(s), {int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs")


def check_executor(executor: Executor) -> None:
    """Fail before any work when `executor` cannot run here (Ray not installed: says how to install it)."""
    if executor is Executor.RAY:
        import_ray()


def create_executor(cfg: RunConfig | RealConfig, kind: CellKind = EVAL_CELLS) -> CellExecutor:
    """The executor `cfg.executor` names, computing cells of `kind`."""
    if cfg.executor is Executor.RAY:
        import_ray()
        return RayExecutor(cfg.ray_address, kind, cfg.ray_timeout)
    return LocalExecutor(kind)
