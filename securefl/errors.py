"""Exception types. Every error securefl raises derives from SecureFLError."""

from __future__ import annotations


class SecureFLError(Exception):
    """Base class of every securefl error."""


class InputError(SecureFLError, ValueError):
    """A caller's input is invalid: bad update, weights, structure or option."""


class StructureError(InputError):
    """Updates from different clients do not share one structure (keys, shapes, dtypes)."""


class ConfigError(SecureFLError, ValueError):
    """A parameter combination cannot work (e.g. the sum cannot fit the 64-bit ring)."""


class ProtocolError(SecureFLError):
    """A message is malformed, replayed, misaddressed, tampered, or breaks the protocol."""


class DropoutError(SecureFLError):
    """Too many parties dropped out for the round to finish with a correct result."""


class AggregatorError(SecureFLError):
    """An aggregator (leader, helper, server or key holder) failed; the round has no result."""
