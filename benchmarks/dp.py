"""How tight the DP audit is (the `dp` section of `make bench`).

For ClipGaussian(eps, delta=1e-5) at the encoder's full dimension (384), the dp_audit probe's
worst-case game with 50,000 threshold + 150,000 evaluation draws per input: the figure
`dp_tightness_eps<eps>` is its 95% lower bound on epsilon divided by the analytic epsilon (1.0
would be a perfectly tight audit; above 1 would be an unsound one). `dp_tightness_cp_eps1` is the
plain Clopper-Pearson (Jagielski et al. 2020) bound of the same audit, for comparison.
"""

from __future__ import annotations

import time

import numpy as np

from audits.probes.base import Auxiliary
from audits.probes.dp_audit import DpAudit
from audits.results import Sample
from audits.transforms import ClipGaussian

DIMENSION = 384
EPSILONS = (0.5, 1.0, 2.0, 4.0)
THRESHOLD_QUERIES = 50_000
QUERIES = 150_000


def audit(epsilon: float, seed: int = 0) -> tuple[dict, float]:
    """One worst-case audit of ClipGaussian(epsilon): its scores by metric, and its seconds."""
    transform = ClipGaussian(epsilon, 1e-5)
    rng = np.random.default_rng([seed, 2023])
    aux = Auxiliary((), np.zeros((0, DIMENSION), np.float32), release=lambda x: transform.apply(x, rng),
                    guarantee=transform.guarantee())
    started = time.perf_counter()
    probe = DpAudit(seed=seed, queries=QUERIES, threshold_queries=THRESHOLD_QUERIES).fit(aux)
    scores = {s.metric: s for s in probe.score(Sample((), np.zeros((0, DIMENSION), np.float32), None, "bench"))}
    return scores, time.perf_counter() - started


def dp_figures() -> dict[str, float]:
    figures: dict[str, float] = {}
    for epsilon in EPSILONS:
        scores, seconds = audit(epsilon)
        label = f"{epsilon:g}"
        figures[f"dp_tightness_eps{label}"] = round(scores["empirical_epsilon"].ci_low / epsilon, 3)
        if epsilon == 1.0:
            figures["dp_tightness_cp_eps1"] = round(scores["empirical_epsilon_cp"].ci_low / epsilon, 3)
            figures["dp_audit_seconds"] = round(seconds, 2)
    figures["dp_queries"] = THRESHOLD_QUERIES + QUERIES
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(dp_figures(), indent=2))
