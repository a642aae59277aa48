"""Errors raised while finding, reading and validating datasets."""

from __future__ import annotations

from pathlib import Path

from vlarena.errors import UserInputError


class DataError(UserInputError):
    """Base class of every data error, so callers can catch them together."""


class DataUnavailableError(DataError):
    """A dataset's source files are not installed; the message says how to install them."""


class ManifestError(DataError):
    """A manifest or its dataset.json is invalid.

    ``line`` is 1-based and None for errors about the whole file (or about dataset.json);
    ``field`` is None when the error is not about one field.
    """

    def __init__(self, path: Path, line: int | None, field: str | None, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = str(self.path)
        if line is not None:
            where += f" line {line}"
        if field is not None:
            where += f', field "{field}"'
        super().__init__(f"{where}: {problem}")


class ImageError(DataError):
    """An image is missing or cannot be decoded; ``image`` names it, ``line`` its record."""

    def __init__(
        self,
        image: str,
        problem: str,
        manifest: Path | None = None,
        line: int | None = None,
    ) -> None:
        self.image = image
        self.problem = problem
        self.manifest = manifest
        self.line = line
        where = f"{manifest} line {line}: " if manifest is not None and line is not None else ""
        super().__init__(f"{where}image {image}: {problem}")
