# Typed errors every link to a card or secure module raises (NFC reader, ISO 14443-4, PSAM T=0).
# The application layers catch these and nothing else from a link: a driver that fails in any
# other way is a bug. Every link recovers on its next poll/reset after raising one of these.


class LinkError(OSError):
    """Base of all link failures."""


class LinkTimeout(LinkError):
    """The chip or card did not answer in time."""


class CardGone(LinkError):
    """The card left the field (or stopped answering) during an exchange.
    The command may or may not have executed: callers that care (the purchase) must not assume."""


class ProtocolError(LinkError):
    """A malformed frame, a bad checksum or CRC, or a sequence the protocol forbids."""


class ChipError(LinkError):
    """The reader chip or secure module did not answer or reported an internal error."""
