"""The errors vat-hf shows to people: one base class, each error naming what is wrong and, where
there is one, the fix.

A leaf module (it imports nothing of vat-hf), so every layer can raise these without pointing up.
"""

from __future__ import annotations

from typing import Optional


class VatHfError(Exception):
    """Base of every user-facing vat-hf error. ``fix`` (optional) says what to do about it and is
    shown on a line of its own.

    >>> str(VatHfError("recipe r.yaml: unknown key 'lerning_rate'", fix="did you mean learning_rate?"))
    "recipe r.yaml: unknown key 'lerning_rate'\\n  fix: did you mean learning_rate?"
    """

    def __init__(self, message: str, fix: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class RecipeError(VatHfError, ValueError):
    """An experiment recipe key or value that cannot be used; names the key and the fix."""
