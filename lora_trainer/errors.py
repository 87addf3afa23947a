"""Errors the user can act on.

A `UserError` carries a message written for the person at the keyboard: what is wrong,
with which file or key, and what to do. The CLI prints it without a traceback and exits
with code 2; the UI shows it next to the field or in the log.
"""


class UserError(Exception):
    """Bad input or configuration: a clear message, no traceback."""

    exit_code = 2


class CheckpointError(UserError):
    """A model file or state dict that cannot be used (corrupt, unsupported, incomplete)."""


class DatasetError(UserError):
    """A dataset folder that cannot be used as given."""


class ConfigError(UserError):
    """A configuration value that is wrong; the message names the key and what is allowed."""


class StorageError(UserError):
    """A file could not be written (full disk, file-size limit, permissions); the message names it."""

    exit_code = 1
