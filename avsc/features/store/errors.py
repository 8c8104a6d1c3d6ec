"""The store's errors."""

from __future__ import annotations

import os


class StoreError(RuntimeError):
    """A feature store that cannot be used as asked; the message names the folder or file."""


class PreprocessError(RuntimeError):
    """``--strict`` preprocessing stopped at a bad clip; the message names the file."""


class ClipError(ValueError):
    """A clip that cannot be featurized: ``file`` names the offending file."""

    def __init__(self, file: str | os.PathLike, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file = str(file)
        self.problem = problem
