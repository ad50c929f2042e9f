"""What a running gateway holds: PostgreSQL's driver and the verdict's numpy and
scipy are loaded only when used (some 35 MB that a SQLite gateway nobody asks
for a verdict should not carry)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "scipy", "matplotlib", "psycopg")


def test_the_gateway_service_loads_no_heavy_library_it_does_not_use() -> None:
    code = (
        f"import sys, gateway.service\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
