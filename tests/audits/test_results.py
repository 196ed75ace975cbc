import numpy as np
import pytest

from audits.probes.base import Auxiliary
from audits.results import Sample, Score


def test_sample_rows_must_line_up():
    vectors = np.zeros((2, 4), np.float32)
    Sample(("a", "b"), vectors, ("x", "y"), "v1", secrets=({"name": "Ann"}, {}), labels=("hr", "medical"))
    with pytest.raises(ValueError, match="secrets must have 2 entries"):
        Sample(("a", "b"), vectors, None, "v1", secrets=({},))
    with pytest.raises(ValueError, match=r"vectors must be \(n, dim\)"):
        Sample(("a",), vectors, None, "v1")
    with pytest.raises(ValueError, match="2 texts but 3 vectors"):
        Auxiliary(("a", "b"), np.zeros((3, 4)))


def test_score_refuses_non_finite_values_and_values_outside_their_interval():
    assert Score("p", "m", 0.5, 0.4, 0.6, 10).key == "p.m"
    with pytest.raises(ValueError, match="not finite"):
        Score("p", "m", float("nan"), 0.0, 1.0, 10)
    with pytest.raises(ValueError, match="outside its interval"):
        Score("p", "m", 0.9, 0.1, 0.2, 10)
