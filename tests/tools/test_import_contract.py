"""The import contract of `make lint`: the checkout keeps it, and each wrong arrow breaks it.

The wrong arrows are written into a copy of the packages, so the checkout is
never touched; lint-imports runs there as `make lint` runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("dsp", "protocol", "gateway", "tools", "firmware/hushlight")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd comes first on the path, ahead of the editable install of the checkout
    env = dict(os.environ, PYTHONPATH="firmware")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "pyproject.toml", out / "pyproject.toml")
    for name in PACKAGES:
        shutil.copytree(
            ROOT / name, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return out


def test_the_checkout_keeps_every_contract() -> None:
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_the_copy_keeps_every_contract_before_a_wrong_arrow(copy: Path) -> None:
    run = lint_imports(copy)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("gateway/wrong_arrow.py", "from tools.errors import UsageError", "the gateway imports"),
        ("gateway/wrong_arrow.py", "import hushlight.config", "the gateway imports"),
        ("dsp/wrong_arrow.py", "from tools import errors", "dsp imports neither"),
        ("protocol/wrong_arrow.py", "import gateway.errors", "protocol imports no"),
        ("firmware/hushlight/wrong_arrow.py", "import dsp.weighting", "the firmware imports"),
        ("firmware/hushlight/wrong_arrow.py", "from gateway import policy", "the firmware imports"),
    ],
)
def test_a_wrong_arrow_fails_lint(copy: Path, module: str, line: str, contract: str) -> None:
    path = copy / module
    path.write_text(line + "\n")
    try:
        run = lint_imports(copy)
    finally:
        path.unlink()
    assert run.returncode != 0, run.stdout
    broken = [x for x in run.stdout.splitlines() if x.endswith("BROKEN")]
    assert len(broken) == 1 and broken[0].startswith(contract), run.stdout
    # the report names the offending import
    assert module.removeprefix("firmware/").removesuffix(".py").replace("/", ".") in run.stdout
