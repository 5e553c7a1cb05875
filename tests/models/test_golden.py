"""Shipped models against their stored outputs: a change that silently alters results fails here.

Tolerance: max abs difference 1e-4 on the [0, 1] scale (fp32 CPU kernels differ between machines
by ~1e-6; an output change that matters is far larger). Regenerate on purpose only:
``python tests/golden/regenerate.py``."""

import numpy as np
import pytest

from pixbatch.models import DEFAULT_SR_MODELS
from tests.golden.regenerate import HERE, golden_output

TOLERANCE = 1e-4


@pytest.mark.parametrize("name", sorted(DEFAULT_SR_MODELS.values()))
def test_shipped_model_matches_its_golden_output(name):
    expected = np.load(HERE / f"{name}.npy")
    got = golden_output(name)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE
