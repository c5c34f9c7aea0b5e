"""The error tree of Kraken.

Every bad request is a typed error that carries the reply line the client gets,
whether the connection survives it, and its ``kind``: a short fixed name that
metrics count it by (never the reply text, which can hold what a client chose).
The parser never raises anything but these; a session turns them into replies
and, for framing errors, a close.

    KrakenError
    └── ProtocolError              a request the server cannot honour
        ├── UnknownCommand         ``ERROR``; the connection stays open
        ├── ClientError            ``CLIENT_ERROR <reason>``; the connection stays open
        │   ├── BadTopic           a topic with a control byte, or longer than 250 bytes
        │   ├── BadHorizon         a retro_subscribe horizon that is no time, or too far ahead
        │   ├── BadPublishBlock    a publish data block that is not a list of entries
        │   ├── UnknownSetCommand  ``set <name>`` for a name that is no command
        │   ├── Forbidden          the client may not use a topic (see ``Authorizer``)
        │   ├── TooManySubscriptions  a subscribe past ``max_subscriptions_per_client``
        │   ├── TooManyTopics      a message naming more than ``max_topics_per_message``
        │   └── FramingError       the byte stream cannot be trusted any more, so the
        │                          connection is closed after the reply
        └── ServerError            ``SERVER_ERROR <reason>``: the server, not the request, failed
"""

from __future__ import annotations


class KrakenError(Exception):
    """Base class of every error Kraken raises on purpose."""


class ProtocolError(KrakenError):
    """A request that gets an error reply instead of being carried out."""

    closes: bool = False
    kind: str = "other"  # the label metrics count it under; one per class, never client text

    @property
    def reply(self) -> bytes:
        raise NotImplementedError


class UnknownCommand(ProtocolError):
    """A request line whose first word is not a command (``ERROR``)."""

    kind = "unknown_command"

    @property
    def reply(self) -> bytes:
        return b"ERROR\r\n"


class ClientError(ProtocolError):
    """A well-framed request with bad content; nothing of it takes effect."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def reply(self) -> bytes:
        return b"CLIENT_ERROR " + self.reason.encode("ascii", "backslashreplace") + b"\r\n"


class BadTopic(ClientError):
    """A topic with a byte below 0x21 other than space, DEL, or more than 250 bytes."""

    kind = "bad_topic"

    def __init__(self, reason: str = "bad topic") -> None:
        super().__init__(reason)


class BadHorizon(ClientError):
    """A retro_subscribe horizon that is not ``seconds[.micros]``, or lies too far ahead."""

    kind = "bad_horizon"

    def __init__(self, reason: str = "bad horizon") -> None:
        super().__init__(reason)


class BadPublishBlock(ClientError):
    """A publish data block that does not parse as ``MESSAGE`` entries."""

    kind = "bad_publish_block"

    def __init__(self, reason: str = "bad publish block") -> None:
        super().__init__(reason)


class UnknownSetCommand(ClientError):
    """``set <name> ...`` where ``<name>`` is not a command of the protocol."""

    kind = "unknown_set_command"


class BadPushOption(ClientError):
    """``set push`` naming an option this server does not know."""

    kind = "bad_push_option"


class Forbidden(ClientError):
    """The client's identity does not allow it to subscribe or publish to a topic."""

    kind = "forbidden"


class TooManySubscriptions(ClientError):
    """A subscribe that would take the client past ``max_subscriptions_per_client``
    topics: none of its topics is subscribed."""

    kind = "too_many_subscriptions"


class TooManyTopics(ClientError):
    """A publish with a message naming more than ``max_topics_per_message`` topics:
    no message of its block is published."""

    kind = "too_many_topics"


class FramingError(ClientError):
    """The stream lost its framing: reply, then close the connection."""

    closes = True
    kind = "framing"


class ServerError(ProtocolError):
    """The server could not carry out a good request (``SERVER_ERROR <reason>``)."""

    kind = "server_error"

    def __init__(self, reason: str, closes: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.closes = closes

    @property
    def reply(self) -> bytes:
        return b"SERVER_ERROR " + self.reason.encode("ascii", "backslashreplace") + b"\r\n"


ERROR_KINDS = (
    UnknownCommand.kind,
    BadTopic.kind,
    BadHorizon.kind,
    BadPublishBlock.kind,
    UnknownSetCommand.kind,
    BadPushOption.kind,
    Forbidden.kind,
    TooManySubscriptions.kind,
    TooManyTopics.kind,
    FramingError.kind,
    ServerError.kind,
    ProtocolError.kind,
)
"""Every ``kind`` a protocol error can have: the label values of the error metric."""


# -- raised by the clients ----------------------------------------------------------
#
#   KrakenError
#   ├── ProtocolError
#   │   └── ErrorReply         the server answered ERROR, CLIENT_ERROR or SERVER_ERROR
#   ├── RegistrationTooOld     NOT_FOUND: the server can no longer replay since the horizon
#   ├── ConnectionLost         no server answered within the bounded wait
#   │   └── SlowConsumer       the server dropped this client for not polling fast enough
#   └── StateLost              messages were missed for good: reload from the datastore


class ErrorReply(ProtocolError):
    """The server answered a request with an error line."""

    def __init__(self, line: bytes) -> None:
        super().__init__(line.decode("utf-8", "replace"))
        self.line = line

    @property
    def reply(self) -> bytes:
        return self.line + b"\r\n"


class RegistrationTooOld(KrakenError):
    """``NOT_FOUND``: messages since the horizon are no longer all in the server's buffer."""


class ConnectionLost(KrakenError):
    """The server could not be reached within the client's bounded wait."""


class SlowConsumer(ConnectionLost):
    """The server closed the connection because the client's queue overflowed."""


class StateLost(KrakenError):
    """Messages were missed and cannot be replayed; ``topics`` need a reload.

    Raised by the listening helpers when no ``on_state_lost`` callback is set.
    """

    def __init__(self, server: str, topics: frozenset[bytes]) -> None:
        n = len(topics)
        super().__init__(f"messages on {n} topic{'' if n == 1 else 's'} from {server} were lost")
        self.server = server
        self.topics = topics
