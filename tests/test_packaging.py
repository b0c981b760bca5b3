"""A package people can cite and depend on: the version everywhere it is written, the licence in
the built wheel, CITATION.cff and the changelog."""
import email
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

import raybrain
from raybrain.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def test_version_is_one_number_everywhere(capsys):
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert raybrain.__version__ == VERSION == importlib.metadata.version("raybrain")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"raybrain {importlib.metadata.version('raybrain')}\n"


def test_version_falls_back_to_the_package(capsys, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    monkeypatch.setattr(raybrain, "__version__", "9.8.7")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "raybrain 9.8.7\n"


def test_version_on_the_command_line():
    out = subprocess.run([sys.executable, "-m", "raybrain.cli", "--version"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"raybrain {VERSION}\n"


def test_citation_cff():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "version", "license", "repository-code"):
        assert cff.get(key), key
    assert all(isinstance(a, dict) and (a.get("name") or a.get("family-names")) for a in cff["authors"])
    assert str(cff["version"]) == VERSION == raybrain.__version__
    assert cff["license"] == PYPROJECT["project"]["license"] == "MIT"
    assert cff["repository-code"] == PYPROJECT["project"]["urls"]["Homepage"]


def test_changelog_has_unreleased_and_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[Unreleased\]$", text, re.M)
    assert re.search(rf"^## \[{re.escape(VERSION)}\]", text, re.M)
    assert f"[{VERSION}]: https://github.com/raybrain/raybrain/releases/tag/v{VERSION}" in text


def test_license_ships_in_the_wheel(tmp_path):
    """Build the wheel from a copy of the sources (the checkout is left alone) and look inside."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "raybrain", src / "raybrain",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info"))
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "whl"),
                              str(src)], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip("building the wheel took over 180 s (pip could not fetch setuptools>=77?)")
    if out.returncode != 0:
        log = out.stdout + out.stderr
        offline = ("build dependencies" in log  # pip could not get the build backend
                   and re.search(r"No matching distribution|Could not find a version|connection|resolve", log, re.I))
        if offline:
            pytest.skip("cannot build the wheel here: pip could not install the build backend "
                        "(setuptools>=77) from a package index")
        pytest.fail(f"pip wheel failed:\n{log[-3000:]}")
    wheel, = (tmp_path / "whl").glob("raybrain-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = f"raybrain-{VERSION}.dist-info"
        licence = z.read(f"{info}/licenses/LICENSE").decode()
        meta = email.message_from_bytes(z.read(f"{info}/METADATA"))
    assert licence == (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Copyright (c) 2026 the raybrain developers" in licence
    assert f"{info}/licenses/raybrain/data/NOTICE" in names
    assert meta["Version"] == VERSION and meta["License-Expression"] == "MIT"
    assert "LICENSE" in meta.get_all("License-File")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Documentation", "Issues", "Changelog"}
    assert all(u.startswith("https://github.com/raybrain/raybrain") for u in urls.values())
    assert "Intended Audience :: Science/Research" in meta.get_all("Classifier")


def test_ray_requirement_is_the_tested_range():
    """``ray[tune]`` is a range, not one release: it holds both tested ends (2.59.0, the first release
    whose local Ray has token authentication on by default, and 2.60.0), the installed Ray and the
    Ray the cluster recipes run; 2.58 (a local Ray without token authentication) is outside."""
    import ray
    from packaging.requirements import Requirement

    from raybrain.cluster_check import RECIPES_RAY

    deps = PYPROJECT["project"]["dependencies"]
    req = next(r for r in map(Requirement, deps) if r.name == "ray")
    assert "tune" in req.extras
    assert not any(s.operator in ("==", "===") for s in req.specifier)
    for v in ("2.59.0", "2.60.0", RECIPES_RAY, ray.__version__):
        assert v in req.specifier, v
    assert "2.58.1" not in req.specifier and "3.0.0" not in req.specifier
