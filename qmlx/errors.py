"""Exceptions raised by qmlx: one family, rooted at `QmlxError`.

Every error about user input names the offending file (or option, or object) and the problem in
one line, so that the command line prints it without a traceback and exits with status 1.
"""

from __future__ import annotations


class QmlxError(Exception):
    """Base class of all errors qmlx raises on purpose."""


class DataFormatError(QmlxError, ValueError):
    """A file or array does not have the structure qmlx expects."""


class DataNotFoundError(QmlxError, FileNotFoundError):
    """A data set could not be found locally and could not be downloaded."""


class ConfigError(QmlxError, ValueError):
    """An option or setting is invalid or inconsistent (a bad value, a fold that does not exist,
    a resumed run whose settings differ from its checkpoint)."""


class TrainingError(ConfigError):
    """A training request cannot be carried out (no such target, too few molecules, ...)."""


class DomainError(QmlxError, ValueError):
    """Input lies outside what a model can answer for (an element it never saw, atoms on top of
    each other, a periodic cell given to a molecular model, ...)."""


class DomainWarning(UserWarning):
    """Some molecules lie outside a model's training domain but can still be predicted (an unusual
    bond length, a larger molecule than any seen in training, ...); their predictions are less
    reliable. Filter it by category: ``warnings.simplefilter("ignore", DomainWarning)``."""
