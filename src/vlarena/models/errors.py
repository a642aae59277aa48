"""Errors in what a user asked of a model: its config or a saved file that does not fit it."""

from __future__ import annotations

from vlarena.errors import UserInputError


class ConfigError(UserInputError):
    """A model config that names no family, preset or field, or a value its family cannot take;
    `field` is its path in the job spec."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ModelFileError(UserInputError):
    """A saved model file that does not fit the model its header names."""
