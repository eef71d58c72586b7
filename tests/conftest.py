"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def gen():
    """A seeded generator: every test draws its own reproducible data."""
    return torch.Generator().manual_seed(1234)
