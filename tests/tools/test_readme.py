"""The README's instructions, run as written."""

from __future__ import annotations

import os
import re
import subprocess

from tools.upy import REPO_ROOT

README = REPO_ROOT / "README.md"


def test_the_readme_says_how_to_get_hushlight_on_the_path() -> None:
    text = README.read_text()
    found = re.search(r"run `(source \.venv/bin/activate)`", text)
    assert found, "the README never says how to put `hushlight` on the PATH"
    # a shell whose PATH knows nothing of the virtual environment
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(REPO_ROOT))
    )
    proc = subprocess.run(
        ["bash", "-c", f"{found.group(1)} && command -v hushlight && hushlight --help"],
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": path, "VIRTUAL_ENV": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(REPO_ROOT / ".venv" / "bin" / "hushlight")
    # the technician section, which writes plain `hushlight`, says so before its first command
    technicians = text.split("## For technicians", 1)[1]
    assert found.group(1) in technicians[: technicians.index("hushlight build")]
