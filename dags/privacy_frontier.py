"""
### Privacy-utility frontier

Sweep one or more privacy transforms' strength for a deployment and see what each setting costs and buys:

* **leakage**: the deployment's probes, trained noise-aware on the auxiliary corpus embedded
  through that transform, scored on canaries (`dp_audit` and `repeat_query` are left out);
* **utility**: retrieval recall@10 of paraphrase pairs (same facts, other words), queries and
  documents both through the transform.

Each point is judged against the deployment's gate thresholds. The report (`frontier.html`, with
charts, and `frontier.json`, under `<artifacts root>/frontier/<deployment>/<run id>/`) recommends
the passing point with the smallest utility loss, across the kinds swept, and gives the
`embwarden versions add ...` command that creates it as a new version. Kinds: pick one or more
(`all`: every kind). Fitted kinds (`pac_gaussian`, `spectral`, `adversarial`) are fitted on the
auxiliary corpus for each point, and the command pins the artifact measured. Strengths left
empty: a default grid per kind (epsilon for `clip_gaussian`, `vmf` and `jl_gaussian`, sigma for
`gaussian_noise`, dimension for `random_projection`, bits for `quantize`, `mi_bits` for
`pac_gaussian`, `keep` for `spectral`, `privacy_weight` for `adversarial`); with several kinds,
give them per kind, e.g. `{"clip_gaussian": [1000, 3000], "spectral": [16, 64]}`. Nothing is
written to the ledger.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

# monitors.frontier.grid's KINDS and pairs bounds, written out: importing them would load numpy at parse
# time. tests/monitors/frontier/test_frontier.py holds the form equal to them.
KINDS = ("clip_gaussian", "vmf", "gaussian_noise", "random_projection", "quantize", "pac_gaussian", "spectral",
         "jl_gaussian", "adversarial")
LIST = {"items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1, "maxItems": 12}   # one kind's strengths
DEFAULT_PAIRS, MIN_PAIRS, MAX_PAIRS = 500, 50, 20_000


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["embwarden", "privacy"],
    default_args={"retries": 2},
    params={
        "deployment": Param(type="string", pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", title="Deployment",
                            description="As named in embwarden.yaml, e.g. support-search"),
        # A multi-select in the form; a string ("spectral", "clip_gaussian,spectral" or "all") from the API.
        "kind": Param(["clip_gaussian"], type=["array", "string"], items={"type": "string", "enum": [*KINDS, "all"]},
                      examples=[*KINDS, "all"], minItems=1, uniqueItems=True,
                      pattern=rf"^(all|({'|'.join(KINDS)})(,({'|'.join(KINDS)}))*)$", title="Transforms",
                      description="One or more kinds to sweep (all: every kind); the recommendation picks across them"),
        "strengths": Param(None, type=["null", "array", "object"], **LIST, title="Strengths",
                           propertyNames={"enum": list(KINDS)}, additionalProperties={"type": "array", **LIST},
                           minProperties=1,
                           description="epsilon, sigma, dimension, bits, mi_bits, keep or privacy_weight, e.g. "
                                       "[100, 1000, 3000] for one kind, or per kind "
                                       '{"clip_gaussian": [1000, 3000], "spectral": [16, 64]}; '
                                       "empty: each kind's default grid"),
        "pairs": Param(DEFAULT_PAIRS, type="integer", minimum=MIN_PAIRS, maximum=MAX_PAIRS, title="Paraphrase pairs",
                       description="Queries (and documents) of the retrieval recall@10 measure"),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
)
def privacy_frontier():
    @task
    def sweep(params=None, dag_run=None) -> dict:
        from monitors.tasks.privacy_frontier import run_sweep

        return run_sweep(params["deployment"], params["kind"], params.get("strengths"), params["pairs"],
                             dag_run.run_id)

    sweep()


privacy_frontier()
