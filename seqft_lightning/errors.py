"""User-facing errors: one line that names what is wrong and how to fix it. Entry points (``train.py``,
``compare.py``) catch :class:`SeqftError`, print ``error: <message>`` on one line and exit with
:data:`EXIT_USER_ERROR`; anything else is a bug and keeps its traceback."""

#: Exit status of every refused input (bad config, missing data, bad compare folder).
EXIT_USER_ERROR = 2


class SeqftError(Exception):
    """Base class of errors caused by the user's input, not by a bug."""


class ConfigError(SeqftError):
    """An invalid configuration value (names the key and the accepted values)."""


class DataError(SeqftError):
    """Missing, corrupt or insufficient data (names the file or class and the fix)."""
