"""Attribute inference: how well does a vector give away a sensitive attribute of its text?

A logistic-regression classifier is trained on the auxiliary corpus (vector -> attribute) and
applied to the targets (Song & Raghunathan 2020 infer authorship this way). The attribute is
the targets' label (a label column of the sample, or the canaries' category), or whether the
text holds a secret of a given kind: `has_condition` asks "does this text mention a medical
condition?". Metrics: ROC AUC (one-vs-rest, macro-averaged over classes) and `advantage`,
the classifier's accuracy minus that of always guessing the targets' most common value. The
AUC's interval is DeLong's (closed form); `bootstrap_resamples` sizes the advantage's below
audits.metrics.ANALYTIC_FROM targets.
"""

from __future__ import annotations

import logging
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from audits.errors import ProbeError
from audits.metrics import auc_with_ci, mean_with_ci
from audits.params import Int, Real, parameters
from audits.probes.base import Auxiliary
from audits.results import Sample, Score

log = logging.getLogger(__name__)


def attribute_values(attribute: str, labels, secrets, where: str) -> np.ndarray:
    """The attribute of each row: its label, or 'yes'/'no' for `has_<kind>`."""
    if attribute == "label":
        if labels is None:
            raise ProbeError(f"attribute_inference: the {where} has no labels "
                             "(give the source a label column, or use canaries)")
        return np.asarray(labels, dtype=object)
    if attribute.startswith("has_"):
        if secrets is None:
            raise ProbeError(f"attribute_inference: the {where} has no known secrets to derive {attribute!r} from")
        kind = attribute.removeprefix("has_")
        return np.asarray(["yes" if kind in s else "no" for s in secrets], dtype=object)
    raise ProbeError(f"attribute_inference.attribute: {attribute!r}, expected 'label' or 'has_<secret kind>'")


class AttributeInference:
    name: ClassVar[str] = "attribute_inference"
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {"auc": (0, 1), "advantage": (-1, 1)}

    @parameters
    def __init__(self, seed: int = 0, attribute: Annotated[str, Field(pattern=r"^(label|has_[a-z_]+)$")] = "label",
                 regularization: Annotated[float, Real(above=0, high=1e6)] = 1.0,
                 bootstrap_resamples: Annotated[int, Int(100, 100_000)] = 1000) -> None:
        self.seed = seed
        self.attribute = attribute
        self.regularization = regularization
        self.bootstrap_resamples = bootstrap_resamples

    @property
    def needs(self) -> tuple[str, ...]:
        return ("labels",) if self.attribute == "label" else ("secrets",)

    def fit(self, aux: Auxiliary) -> AttributeInference:
        from sklearn.linear_model import LogisticRegression

        y = attribute_values(self.attribute, aux.labels, aux.secrets, "auxiliary corpus")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ProbeError(f"attribute_inference: the auxiliary corpus has one value of {self.attribute!r} "
                             f"({classes.tolist()}), expected at least two")
        self.model_ = LogisticRegression(C=self.regularization, max_iter=2000).fit(
            np.asarray(aux.vectors, dtype=np.float32), y)
        log.info("attribute_inference fitted on %d texts, %d classes of %r", len(y), len(classes), self.attribute)
        return self

    def score(self, sample: Sample) -> list[Score]:
        if not hasattr(self, "model_"):
            raise ProbeError("attribute_inference.score called before fit")
        y = attribute_values(self.attribute, sample.labels, sample.secrets, "sample")
        known = np.isin(y, self.model_.classes_)
        if not known.any():
            raise ProbeError(f"attribute_inference: no target has a value of {self.attribute!r} the attacker "
                             f"knows ({self.model_.classes_.tolist()})")
        y, vectors = y[known], sample.vectors[known]
        proba = self.model_.predict_proba(np.asarray(vectors, dtype=np.float32))
        classes = self.model_.classes_
        present = np.unique(y)
        if len(present) < 2:
            raise ProbeError(f"attribute_inference: all targets have {self.attribute} = {present[0]!r}; "
                             "AUC needs at least two values")

        correct = classes[proba.argmax(1)] == y
        values, counts = np.unique(y, return_counts=True)
        majority = values[counts.argmax()]
        # Per target: did the attacker guess right, minus did the majority guess get it right.
        advantage = correct.astype(float) - (y == majority)
        n = len(y)
        auc_ci = auc_with_ci(y, proba, classes)
        return [
            Score(self.name, "auc", *auc_ci, n),
            Score(self.name, "advantage", *mean_with_ci(advantage, seed=self.seed + 1,
                                                        n_resamples=self.bootstrap_resamples), n),
        ]
