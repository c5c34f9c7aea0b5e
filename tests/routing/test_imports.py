"""The wire and routing packages are pure: importing them starts no I/O machinery."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["kraken.wire", "kraken.routing"])
def test_importing_a_pure_package_loads_neither_asyncio_nor_socket(package):
    code = (
        f"import sys, {package}\n"
        "assert '" + package + "' in sys.modules\n"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('asyncio', 'socket', '_socket')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_importing_wire_and_routing_together_loads_neither_asyncio_nor_socket():
    code = (
        "import sys, kraken.wire, kraken.routing\n"
        "print(sorted(m for m in ('asyncio', 'socket', '_socket') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
