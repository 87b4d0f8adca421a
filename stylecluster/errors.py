"""The one error type stylecluster raises for what the user can fix.

:class:`StyleclusterError` is the base: the command line catches it alone and prints it as one
line (``stylecluster: error: ...``, exit status 2; the traceback under ``-v``). Anything else —
a numpy or scikit-learn ``ValueError`` included — is a bug and surfaces as a traceback.

The subclasses also derive from the built-in exception the same failure would raise in plain
Python (``ValueError`` for a bad value, ``FileNotFoundError`` for a missing file), as
scikit-learn's ``NotFittedError`` does, so that code catching those keeps working.
"""
from __future__ import annotations


class StyleclusterError(Exception):
    """Base of every error caused by the user's input, files or environment; ``str(exc)`` is one line."""


class InputError(StyleclusterError, ValueError):
    """An input — an argument, a labels CSV, a checkpoint, an image folder — cannot be used as given."""


class ConfigError(InputError):
    """A configuration value or key is wrong; the message names the key."""


class MissingInputError(StyleclusterError, FileNotFoundError):
    """A file or folder the command reads does not exist."""


class NotFittedError(StyleclusterError, ValueError, AttributeError):
    """An estimator was used before ``fit`` (or ``load``)."""

    def __init__(self, estimator: object):
        super().__init__(f"this {type(estimator).__name__} is not fitted yet; call fit (or load a saved one) first")
