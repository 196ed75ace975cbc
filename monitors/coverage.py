"""Coverage as a check: its default levels, and what to tell people when the attacker falls short.

The scores come from audits.coverage. Every deployment is judged on them: levels written in
`thresholds:` (or set later in the CLI or UI) win, else these defaults apply. Below a level the
run is `inconclusive` (monitors.verdicts.evaluate): it alerts and never shows as a pass.
"""

from __future__ import annotations

from monitors.ledger.models import AuditRun
from monitors.thresholds import Levels, is_coverage

# Calibrated on all-MiniLM-L6-v2 with 400 sampled texts (docs/probes.md, "Coverage"): an attacker with
# 3,000 texts of the sample's kind scores 0.87-0.89 on embedding and 0.54-0.65 on vocabulary (WordNet
# definitions, literary quotations, fortunes), with 600 quotations 0.78 and 0.24 (vocabulary grows
# slowly with the corpus); the synthetic templates against those score 0.02-0.07 and 0.04-0.07.
DEFAULT_THRESHOLDS: dict[str, Levels] = {
    "coverage.embedding": Levels(warn=0.3, higher_is_worse=False),
    "coverage.vocabulary": Levels(warn=0.2, higher_is_worse=False),
}

ADVICE = ("Give the attacker text like the deployment's: `auxiliary_corpus: {kind: production, size: 3000}` "
          "(a slice of the deployment's own texts, kept only inside the run), `{kind: general}` (real English "
          "from Debian's dictionary and quotation packages), or a file or SQL query of texts of the same kind; "
          "list several to combine them.")


def explain(findings) -> str:
    """One paragraph, in plain words, on why a run with these coverage findings is inconclusive."""
    if not findings:
        return ("Coverage could not be measured (the coverage task failed: see the run's errors), so it is unknown "
                "whether the attacker knew this kind of text, and the audit cannot pass it. " + ADVICE)
    parts = []
    for f in findings:
        if f.metric == "coverage.embedding":
            parts.append(f"only {f.value:.0%} of the sampled texts have a text in the attacker's corpus as close as "
                         f"their own nearest neighbour in the sample (needs {f.levels.warn:.0%})")
        elif f.metric == "coverage.vocabulary":
            parts.append(f"the attacker's corpus holds only {f.value:.0%} of the sampled texts' content words "
                         f"(needs {f.levels.warn:.0%})")
    return ("The attacker did not know this kind of text: " + "; ".join(parts) + ". Its low leakage scores say "
            "nothing about this pipeline, so the audit cannot pass it. " + ADVICE)


def coverage_explanation(run: AuditRun) -> str:
    """Why an inconclusive run could not judge the pipeline, in plain words, with what to configure:
    the attacker did not cover the sample, or a probe (coverage included) failed."""
    from monitors.verdicts import evaluate

    thresholds = {k: Levels.from_mapping(v) for k, v in (run.thresholds or {}).items() if is_coverage(k)}
    coverage = evaluate([s for s in run.scores if is_coverage(s.key)], thresholds)
    if coverage.uncovered or coverage.covered is None:
        return explain(coverage.uncovered)
    failed = [part.split(":", 1)[0] for part in (run.error or "").split("; ") if ":" in part]
    return (f"The probe{'s' if len(failed) > 1 else ''} {', '.join(failed) or '(unknown)'} failed "
            f"({(run.error or '')[:300]}), so what {'they' if len(failed) > 1 else 'it'} would have found is "
            "unknown and the audit cannot pass. Read the failed task's log in Airflow, fix the cause, and run "
            "the audit again; or remove the probe from the deployment's `probes:` if it does not belong there.")
