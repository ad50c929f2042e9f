"""The one exception of the protocol package.

`reason` is a short, stable code meant for metrics labels and logs (the
gateway counts rejected messages per reason); the message is a sentence that
names the field, the offending value and what a sender should do instead.
"""

# Every reason code a ProtocolError can carry, so that a consumer can create
# its counters up front.
REASONS = (
    "too_large",  # payload over MAX_PAYLOAD bytes
    "bad_json",  # not UTF-8, not JSON, or NaN/Infinity tokens
    "bad_type",  # wrong JSON type (including a bool where a number is due)
    "missing_field",  # a required field is absent
    "unknown_field",  # a field the message does not allow (config only)
    "not_finite",  # a number that is NaN or infinite
    "out_of_range",  # a number outside its allowed range
    "bad_value",  # a string outside its allowed set or form (flags, state, ...)
    "bad_id",  # an id outside [a-z0-9-]{1,32}
    "bad_time",  # timestamps out of order or outside the sane range
    "unknown_topic",  # a topic that is not part of the contract
    "unknown_kind",  # a message kind the protocol does not define
)


class ProtocolError(ValueError):
    """A topic or payload that breaks the contract.

    ``reason`` is one of `REASONS`; ``field`` names the offending field
    (``None`` when the whole payload or topic is at fault).
    """

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
