"""User-facing errors: one line that names what is wrong and how to fix it.

Entry points catch :class:`SeqftError`, log its message on one line and exit nonzero;
anything else is a bug and keeps its traceback.
"""


class SeqftError(Exception):
    """Base class of errors caused by the user's input, not by a bug."""


class ConfigError(SeqftError):
    """An invalid configuration value (names the key and the accepted values)."""


class DataError(SeqftError):
    """Missing, corrupt or insufficient data (names the file or class and the fix)."""
