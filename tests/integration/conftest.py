from __future__ import annotations

from collections.abc import Iterator

import pytest

from kraken_testing import ServerProcess, Wire, running_server


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((), id="polls-at-once"),
        pytest.param(("--batch-polls-above", "0"), id="polls-batched"),
        pytest.param(("--log-level", "debug"), id="debug-log"),
    ],
)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A server shared by the tests of one module, run three times: on its defaults (at a
    test's load, a lone poll is answered at once), with every lone poll answered at the end
    of the event loop's turn, as under load, and logging every request at debug level: what
    runs at debug level must serve exactly as at info level."""
    with running_server(*request.param) as process:
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
