"""Errors of the dsp package.

`DspError` is the base; `WavFormatError` is also a `ValueError`, so code that
only knows "bad value" still catches a recording it cannot read.
"""


class DspError(Exception):
    """Base class of the dsp package's errors."""


class WavFormatError(DspError, ValueError):
    """A file is not a WAV recording the meter can read; the message says why and what is."""


class Int32OverflowError(DspError, ArithmeticError):
    """A firmware integer left int32 in the golden model; the message names stage and sample."""


class CoefficientTableError(DspError, ValueError):
    """The committed coefficient module is missing or does not match this code; says which."""
