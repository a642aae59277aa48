"""Fixtures of the deployment tests."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from kubernetes_validate import utils as kubernetes_validate_utils

from .rendering import render

# kubernetes-validate reads and parses its (large) definitions file on every call; the files
# never change during a run, so parse each once.
kubernetes_validate_utils.schema_contents = functools.cache(
    kubernetes_validate_utils.schema_contents
)


@pytest.fixture(scope="session")
def default_objects() -> list[dict[str, Any]]:
    return render()
