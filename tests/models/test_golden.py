"""Shipped models against their stored outputs: a change that silently alters results fails here.

Tolerance: max abs difference 1e-4 (on the [0, 1] scale for images; on logits for segmentation) (fp32 CPU kernels differ between machines
by ~1e-6; an output change that matters is far larger). Regenerate on purpose only:
``python tests/golden/regenerate.py``."""

import numpy as np
import pytest

from tests.golden.regenerate import HERE, golden_output, shipped_models

TOLERANCE = 1e-4


@pytest.mark.parametrize("name", shipped_models())
def test_shipped_model_matches_its_golden_output(name):
    expected = np.load(HERE / f"{name}.npy")
    got = golden_output(name)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE
