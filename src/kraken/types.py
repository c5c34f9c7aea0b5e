"""Names every layer shares, defined once.

Topics and payloads are bytes everywhere inside the server; a horizon is an
integer of Unix microseconds. Nothing here imports anything of Kraken's.
"""

from __future__ import annotations

Topics = tuple[bytes, ...]
"""The topics of a request or a message, in the order the client named them."""

Entry = tuple[Topics, bytes]
"""One message of a publish: the topics it goes to and its payload."""
