"""A scratch PostgreSQL database per test, on the server of this machine (127.0.0.1:5432)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import psycopg

# where the scratch databases are made; a developer elsewhere sets it to a server of theirs
SERVER = os.environ.get("HUSHLIGHT_TEST_POSTGRES", "postgresql://127.0.0.1:5432/postgres")


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """Create a database with a random name, yield its URL, drop it (and its sessions)."""
    name = "hushlight_test_" + secrets.token_hex(6)
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = SERVER.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
