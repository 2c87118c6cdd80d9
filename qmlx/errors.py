"""Exceptions raised by qmlx.

Every error about user input names the offending file (or object) and the problem, so that the
command line can print it as a single line without a traceback.
"""

from __future__ import annotations


class QmlxError(Exception):
    """Base class of all errors qmlx raises on purpose."""


class DataFormatError(QmlxError, ValueError):
    """A file or array does not have the structure qmlx expects."""


class DataNotFoundError(QmlxError, FileNotFoundError):
    """A data set could not be found locally and could not be downloaded."""
