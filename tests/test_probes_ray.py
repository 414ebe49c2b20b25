"""An unreachable `--ray-address` gives up within `--ray-timeout` seconds with one line naming the
address (refused at once; a port where no Ray cluster answers when the time is up), Ray's own log
lines stay out of the terminal, and `ray_timeout` is a validated setting outside the fingerprint."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from real_datasets_builders import make_named_folder
from typoattack.cli import app
from typoattack.tasks.synthetic.config import load_synthetic_config
from typoattack.tasks.real.config import load_real_config
from typoattack.errors import ConfigError
from typoattack.backends.open_clip.model import TINY_MODEL
from typoattack.cluster import RAY_CLIENT_HINT, connect_ray

pytest.importorskip("ray")
runner = CliRunner()
BOUND = 3.0
RAY_LOG_MARKERS = ("rpc_client", "gcs_client", "Failed to connect to GCS", "worker.py", "Connecting to existing Ray")


def _real_args(data: Path, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["real", "--dataset", "rta100", "--data", str(data), "--model", TINY_MODEL, "--pretrained", "seed:0",
            "--device", "cpu", "--workers", "1", "--cache-dir", str(cache_dir), "--out", str(out), *extra]


def test_real_refused_address_is_one_line_within_the_bound(tmp_path, cache_dir, monkeypatch) -> None:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    data = make_named_folder(tmp_path / "rta")
    start = time.monotonic()
    result = runner.invoke(app, _real_args(data, tmp_path / "out", cache_dir, "--executor", "ray",
                                           "--ray-address", "127.0.0.1:1", "--ray-timeout", str(BOUND)))
    seconds = time.monotonic() - start
    assert result.exit_code == 1, result.output
    assert seconds < 60  # the whole command (validation, planning); the connection itself is timed below
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "127.0.0.1:1" in errors[0] and "ray status" in errors[0] and "Connection refused" in errors[0]
    assert "Traceback" not in result.output
    assert not any(marker in result.output for marker in RAY_LOG_MARKERS), result.output


def test_refused_address_is_answered_within_the_bound() -> None:
    import ray

    assert not ray.is_initialized()
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"cannot connect to the Ray cluster at 127\.0\.0\.1:1 \(Connection refused\)"):
        connect_ray("127.0.0.1:1", BOUND)
    assert time.monotonic() - start <= BOUND
    assert not ray.is_initialized()


def test_eval_refused_address_is_one_line(tmp_path, sample_dir, cache_dir) -> None:
    (tmp_path / "vocab.yaml").write_text("words:\n  - {text: pizza, target: pizza}\n")
    result = runner.invoke(app, [
        "eval", "--model", TINY_MODEL, "--pretrained", "seed:0", "--data", str(sample_dir), "--limit", "2",
        "--vocab", str(tmp_path / "vocab.yaml"), "--fraction", "0.1", "--templates", "simple", "--device", "cpu",
        "--workers", "0", "--cache-dir", str(cache_dir), "--out", str(tmp_path / "out"),
        "--executor", "ray", "--ray-address", "127.0.0.1:1", "--ray-timeout", str(BOUND)])
    assert result.exit_code == 1, result.output
    assert "Error: cannot connect to the Ray cluster at 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output


_SILENT_PORT = """
import socket, sys, time
import ray  # imported before the clock starts: the bound is on connecting, not on importing Ray
from typoattack.errors import ConfigError
from typoattack.cluster import connect_ray
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)  # accepts connections, never speaks: not a Ray cluster
address = f"127.0.0.1:{server.getsockname()[1]}"
start = time.monotonic()
try:
    connect_ray(address, float(sys.argv[1]))
except ConfigError as e:
    print("SECONDS", time.monotonic() - start)
    print("MESSAGE", e)
    print("ADDRESS", address)
"""


def test_a_port_without_ray_gives_up_when_the_bound_is_up(tmp_path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", _SILENT_PORT, str(BOUND)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("SECONDS", "MESSAGE",
                                                                                              "ADDRESS")))
    assert set(lines) == {"SECONDS", "MESSAGE", "ADDRESS"}, done.stdout + done.stderr
    assert BOUND - 0.1 <= float(lines["SECONDS"]) <= BOUND + 1.5, lines
    message = lines["MESSAGE"]
    assert lines["ADDRESS"] in message and f"within {BOUND:g} s" in message and "--ray-timeout" in message
    assert "\n" not in message
    # Ray's connection warnings went to its log file, not to this process's terminal.
    assert not any(marker in done.stderr for marker in RAY_LOG_MARKERS), done.stderr


@pytest.mark.skipif(importlib.util.find_spec("grpc") is not None, reason="the Ray Client is installed here")
def test_ray_client_address_without_the_client_says_how_to_install() -> None:
    with pytest.raises(ConfigError) as error:
        connect_ray("ray://127.0.0.1:1", BOUND)
    assert str(error.value).startswith(RAY_CLIENT_HINT) and "pip install 'typoattack[ray]'" in str(error.value)


def test_ray_timeout_setting(tmp_path, sample_dir) -> None:
    data = make_named_folder(tmp_path / "rta")
    base = {"dataset": "rta100", "data": str(data), "model": TINY_MODEL, "pretrained": "seed:0"}
    cfg = load_real_config(None, base)
    assert cfg.ray_timeout == 30.0
    config = tmp_path / "real.yaml"
    config.write_text(f"dataset: rta100\ndata: {data}\nmodel: {TINY_MODEL}\npretrained: 'seed:0'\nray_timeout: 2.5\n")
    short = load_real_config(config)
    assert short.ray_timeout == 2.5 and short.fingerprint() == cfg.fingerprint()
    assert load_real_config(config, {"ray_timeout": 7}).ray_timeout == 7.0
    for bad in (0, -1, "soon"):
        with pytest.raises(ConfigError, match="ray_timeout"):
            load_real_config(None, {**base, "ray_timeout": bad})
    eval_base = {"model": TINY_MODEL, "pretrained": "seed:0", "data": str(sample_dir)}
    eval_cfg = load_synthetic_config(None, {**eval_base, "ray_timeout": 4})
    assert eval_cfg.ray_timeout == 4.0
    assert eval_cfg.fingerprint() == load_synthetic_config(None, eval_base).fingerprint()
    assert json.loads(eval_cfg.fingerprint()).get("ray_timeout") is None
    with pytest.raises(ConfigError, match="ray_timeout"):
        load_synthetic_config(None, {**eval_base, "ray_timeout": 0})
    result = runner.invoke(app, _real_args(data, tmp_path / "o", tmp_path / "c", "--ray-timeout", "0"))
    assert result.exit_code == 1 and "ray_timeout must be a number of seconds > 0" in result.output
