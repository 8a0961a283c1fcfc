"""Errors the user can cause, kept apart from bugs.

The command line prints a :class:`UserError` as one line and exits 2; anything else is an internal
error (exit 1, traceback with ``--debug``). Raise :class:`UserError` only for what the user controls:
options, input images and fields, weights files, data folders. Both subclass the built-in type
Python callers caught before (``ValueError``, ``KeyError`` for unknown names), so ``except
ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["UserError", "UnknownNameError", "MissingDependency", "AlignfuseWarning", "suspect_detail"]


class UserError(ValueError):
    """A wrong option, input or weights file; the message is one line that says what to change."""


class UnknownNameError(UserError, KeyError):
    """An unknown name (model, recipe, config, metric); a ``KeyError`` too, as name lookups raise."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class MissingDependency(UserError, ImportError):
    """An optional extra the chosen option needs is not installed; the message names the install command."""



class AlignfuseWarning(UserWarning):
    """What the Python API says where the command line prints a note or warning: an input converted on reading
    (false-colour IR reduced to luminance, alpha dropped, IR resampled onto the visible grid) or a suspect
    registration. Filter it with ``warnings.simplefilter("ignore", alignfuse.AlignfuseWarning)``."""


def suspect_detail(diagnostics: dict) -> str:
    """Why a registration is suspect, in one line (its warning, fallback and reason)."""
    parts = [diagnostics.get(k) for k in ("warning", "fallback", "reason")]
    return "; ".join(str(p) for p in parts if p) or "registration may have failed"
