"""pyproject.toml and constraints.txt never drift apart: every requirement is a range with a lower
and an upper bound, is pinned in constraints.txt, and its pin lies in that range."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _list_requirements() -> list[Requirement]:
    """Every requirement of pyproject.toml: dependencies, each extra's and the build system's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = list(project["project"]["dependencies"])
    for extra in project["project"]["optional-dependencies"].values():
        deps += extra
    deps += project["build-system"]["requires"]
    return [Requirement(d) for d in deps]


def _load_pins() -> dict[str, Version]:
    """constraints.txt as {canonical name: pinned version}; each line must be `name==version`."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec, = req.specifier
        assert spec.operator == "==" and not req.extras and req.marker is None, f"constraints.txt: {line!r} is not name==version"
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt pins {req.name} twice"
        pins[name] = Version(spec.version)
    return pins


def test_every_requirement_is_a_range_up_to_the_major_after_its_pin() -> None:
    pins = _load_pins()
    for req in _list_requirements():
        if req.name == "setuptools":
            continue  # a build requirement: a floor is enough
        operators = sorted(s.operator for s in req.specifier)
        assert operators == ["<", ">="], f"{req}: want '>=LOWEST_TESTED,<NEXT_MAJOR'"
        high, = (Version(s.version) for s in req.specifier if s.operator == "<")
        pin = pins[canonicalize_name(req.name)]
        next_major = Version("1") if pin.major == 0 else Version(str(pin.major + 1))
        assert high == next_major, f"{req}: the upper bound should be {next_major}, the major release after {pin}"


def test_every_requirement_is_pinned_in_its_range() -> None:
    pins = _load_pins()
    for req in _list_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}")


def test_the_check_sees_a_pin_outside_its_range() -> None:
    req = Requirement("torch>=2.14,<3")
    assert req.specifier.contains(Version("2.14.1"))
    assert not req.specifier.contains(Version("3.0.0")) and not req.specifier.contains(Version("2.13.0"))
    assert req.specifier.contains(Version("2.14.1+cu128"))  # a local CUDA build is in range
