"""memcaching@0.0.4, the npm library the original Kraken Node.js client is built on, talks to
Kraken unchanged: tests/compat/memcaching_client.js drives it against a real server."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from kraken_testing import ROOT, running_server

SCRIPT = ROOT / "tests" / "compat" / "memcaching_client.js"

EXPECTED = {
    "A subscribes": "STORED",
    "B publishes": "STORED",
    "B publishes CRLF payload": "STORED",
    "A polls": ["MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicB topicA 12\r\nline1\r\nline2", 0],
    "B polls, excluded from its own messages": None,
    "A polls a drained queue": None,
    "A unsubscribes topicA": "STORED",
    "B publishes to topicA": "STORED",
    "A polls after unsubscribing": None,
    "B publishes before A registers": "STORED",
    "A registers": "STORED",
    "B publishes after A registers": "STORED",
    "A subscribes retroactively": "STORED",
    "A polls the retroactive message": ["MESSAGE topicR 5\r\nretro", 0],
    "A retro_subscribes from a stale horizon": "NOT_FOUND",
}


def test_original_node_memcache_library_subscribes_publishes_and_polls():
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "memcaching").is_dir():
        pytest.fail("node or node_modules/memcaching is missing: run `make test` (or `npm ci`)")
    with running_server() as server:
        run = subprocess.run(
            [node, str(SCRIPT), str(server.port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        log = server.output()
    assert run.returncode == 0, f"{run.stderr}{run.stdout}\nserver log:\n{log}"
    assert json.loads(run.stdout) == {"ok": True, "results": EXPECTED}
