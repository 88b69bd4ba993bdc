"""The distribution as a user installs it: the wheel built from this tree, installed into a
fresh virtualenv, gives a working ``erpgw`` with its package data (schema snapshot, scenarios).

The fresh venv is made by ``python -m venv`` without ``--system-site-packages``, so nothing of
the development venv or the source tree can leak in: the runtime dependencies are installed by
pip from the configured index (pinned by ``constraints.txt``), the project only from the wheel.
The commands run from an empty directory with no ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "dist", "data",
                                "__pycache__", ".*_cache", ".hypothesis", "bench-out")

pytestmark = pytest.mark.package


def run(*cmd: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout, check=False)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh venv with the wheel of this tree installed."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)  # build a copy: no build/ left in the tree
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp / "dist", src,
        cwd=tmp)
    (wheel,) = (tmp / "dist").glob("erpgw-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "-c",
        ROOT / "constraints.txt", wheel, cwd=tmp)
    return venv / "bin"


def test_wheel_carries_license_schemas_and_scenarios(installed: Path) -> None:
    (wheel,) = (installed.parent.parent / "dist").glob("erpgw-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    snapshot = {p.name for p in (ROOT / "contracts" / "schemas").glob("*.json")}
    assert snapshot and {f"contracts/schemas/{n}" for n in snapshot} <= names
    assert "sim/scenarios/month-end.toml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith("tests/") for n in names)


def test_installed_erpgw_works_outside_the_source_tree(installed: Path, tmp_path: Path) -> None:
    where = run(installed / "python", "-c", "import gateway, sim; print(gateway.__file__)",
                cwd=tmp_path)
    assert str(installed.parent) in where.stdout  # imported from the venv, not the tree

    version = run(installed / "erpgw", "--version", cwd=tmp_path)
    assert version.stdout.strip() == "erpgw 0.1.0"

    check = run(installed / "erpgw", "sim", "--check", "--scenario", "month-end", cwd=tmp_path)
    assert "seed 2025: OK" in check.stdout

    out = tmp_path / "schemas"
    run(installed / "erpgw", "schema", "export", out, cwd=tmp_path)
    exported = {p.name for p in out.glob("*.json")}
    assert exported == {p.name for p in (ROOT / "contracts" / "schemas").glob("*.json")}

    against = run(installed / "erpgw", "schema", "check", cwd=tmp_path)  # the shipped snapshot
    assert "site-packages" in against.stdout and "OK: compatible" in against.stdout
