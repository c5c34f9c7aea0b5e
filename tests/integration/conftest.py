from __future__ import annotations

from collections.abc import Iterator

import pytest

from kraken_testing import ServerProcess, Wire, running_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """A server on its defaults, shared by the tests of one module."""
    with running_server() as process:
        yield process


@pytest.fixture
def connect(server: ServerProcess) -> Iterator[type[Wire]]:
    """Open connections to the module's server; all closed after the test."""
    opened: list[Wire] = []

    def open_one() -> Wire:
        wire = server.wire()
        opened.append(wire)
        return wire

    yield open_one  # type: ignore[misc]
    for wire in opened:
        wire.close()
