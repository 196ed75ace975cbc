"""What an audit found, in words a non-specialist reads: a few sentences made from the run's scores
(what an attacker holding the vectors recovers, whether the version has any protection, what to
do next), and what each metric means. The report, the UI's run page and the alert mail open with
the sentences; metric names link to the glossary.
"""

from __future__ import annotations

from collections.abc import Mapping

# metric -> what it measures, one or two sentences (shown in the report and the UI's metric page).
GLOSSARY: dict[str, str] = {
    "bow_inversion.token_f1": "How well an attacker names the content words of a text from its vector alone (F1 of "
                              "the predicted against the true set of words; 0 = nothing, 1 = every word, no extra).",
    "bow_inversion.token_precision": "Of the words the attacker names, the share that are really in the text.",
    "bow_inversion.token_recall": "Of the text's content words, the share the attacker names.",
    "bow_inversion.secret_recovery": "Of the secret words of a text (names, conditions, ...), the share the attacker "
                                     "names.",
    "candidate_inversion.top1": "The attacker guesses a secret (a surname, a condition) among 100 candidates by "
                                "embedding each guess: the share of secrets ranked first (chance: 0.01).",
    "candidate_inversion.top5": "As top1, the share of secrets among the attacker's first five guesses.",
    "candidate_inversion.exposure_bits": "How many bits of the secret's rank the vector gives away (Carlini et al.; "
                                         "log2 of 100 candidates = 6.6 at most).",
    "attribute_inference.auc": "How well a classifier tells, from the vector, whether a text has a sensitive "
                               "attribute (0.5 = a coin toss, 1 = always).",
    "attribute_inference.advantage": "The classifier's accuracy over always guessing the commoner answer.",
    "generative_inversion.bleu": "A decoder rebuilds the text from its vector: BLEU of the rebuilt against the true "
                                 "text (0-100; 30 and more reads like the original).",
    "generative_inversion.token_f1": "Word overlap (F1) of the rebuilt text with the true one.",
    "generative_inversion.exact_match": "The share of texts rebuilt word for word.",
    "generative_inversion.cosine": "How close the rebuilt text's own vector is to the target vector.",
    "generative_inversion.secret_recovery": "Of the secret words, the share that appear in the rebuilt text.",
    "dp_audit.empirical_epsilon": "The privacy loss the pipeline really shows in a distinguishing game (95% lower "
                                  "bound); above the claimed epsilon means the claim does not hold.",
    "dp_audit.empirical_epsilon_cp": "The same, with exact (Clopper-Pearson) intervals.",
    "dp_audit.epsilon_ratio": "Measured over claimed epsilon: above 1, the stated guarantee is broken.",
    "pac_privacy.mutual_information_bits": "PAC privacy: at most how many bits one vector reveals about which of K "
                                           "equally likely secrets (surnames, texts) it came from; log2 K means all. "
                                           "A bound for any attacker, not one attack, if the noise is the "
                                           "Gaussian its transform declares (value: the bound at 95%).",
    "pac_privacy.posterior_success": "PAC privacy: the most any attacker's chance of naming the secret can be after "
                                     "seeing one vector (a blind guess: 1/K).",
    "repeat_query.f1_gain": "How much more an attacker recovers by asking for the same text many times and "
                            "averaging the answers (fresh noise cancels out).",
    "coverage.embedding": "Whether the attacker knew this kind of text: the share of sampled texts that have a text "
                          "of the attacker's as close as their nearest sampled neighbour. Low: the audit cannot judge.",
    "coverage.vocabulary": "The share of the sampled texts' content words the attacker's corpus holds.",
    "drift.model_auc": "How well a classifier tells this window's vectors from the reference sample (0.5 = the same).",
    "drift.mmd": "Maximum mean discrepancy between the window and the reference sample.",
    "drift.norm_ks": "How differently the vectors' lengths are distributed (Kolmogorov-Smirnov statistic).",
}
# From these values a score shows strong leakage whatever its thresholds say (the example
# configuration's gate levels): the UI's overview flags such a score even when nothing judges it.
STRONG: dict[str, float] = {
    "bow_inversion.token_f1": 0.55, "bow_inversion.secret_recovery": 0.5, "candidate_inversion.top1": 0.5,
    "attribute_inference.advantage": 0.25, "generative_inversion.bleu": 30.0, "generative_inversion.token_f1": 0.5,
    "dp_audit.epsilon_ratio": 1.0, "repeat_query.f1_gain": 0.1, "pac_privacy.posterior_success": 0.5,
}
TARGETS = {"sample": "measured on the audited sample of production vectors",
           "canaries": "measured on canaries: synthetic messages with known secrets, embedded through the live "
                       "pipeline during the audit (the production sample holds no known secrets to check)"}


def meaning(metric: str) -> str:
    """The glossary entry of `metric` (a segment's score shares its metric's); '' when unknown."""
    base = metric.split("[", 1)[0]
    if base.startswith("repeat_query.") and base not in GLOSSARY:
        return "bow_inversion on the mean of k answers for the same text (k in the name)."
    return GLOSSARY.get(base, "")


def summary(scores: Mapping[str, float], verdict: str | None, transform: Mapping | None, guarantee: str | None,
            deployment: str, bounds: Mapping[str, tuple[float, int]] | None = None) -> list[str]:
    """Two to five sentences: what leaks (with the numbers), what bounds it, what protects it, what to do
    next. `bounds`: metric -> (ci_high, n) of scores that are bounds (pac_privacy's)."""
    found = []
    if (recall := scores.get("bow_inversion.token_recall")) is not None:
        found.append(f"names {recall:.0%} of the content words of a text from its vector alone")
    if (top1 := scores.get("candidate_inversion.top1")) is not None:
        found.append(f"picks the true secret (a surname, a condition) out of its candidates {top1:.0%} of the time")
    if (advantage := scores.get("attribute_inference.advantage")) is not None:
        found.append(f"infers a sensitive attribute {advantage * 100:.0f} points more accurately than by always "
                     "guessing the commoner answer")
    if (bleu := scores.get("generative_inversion.bleu")) is not None:
        found.append(f"rebuilds texts with a BLEU of {bleu:.0f} out of 100")
    sentences = []
    if found:
        sentences.append("An attacker who holds these vectors " + "; ".join(found) + ".")
    if (pac := (bounds or {}).get("pac_privacy.posterior_success")) is not None:
        bound, k = pac
        sentences.append(f"Whatever the attack, one vector lets an attacker pick the secret out of {k} equally likely "
                         f"candidates with probability at most {bound:.0%} (PAC privacy bound at 95%, for the "
                         f"pipeline's declared Gaussian noise; a blind guess: "
                         f"{1 / max(k, 1):.0%})" + (": the vectors can give the secret away entirely." if bound >= 1
                                                    else "."))
    kind = (transform or {}).get("kind", "none")
    if kind == "none":
        sentences.append("This version adds no protection: its vectors are the encoder's output as is.")
    elif not guarantee or guarantee == "none":
        sentences.append(f"This version applies {kind} but states no formal privacy guarantee: it protects "
                         "only as much as these numbers show.")
    else:
        sentences.append(f"This version applies {kind}, which states {guarantee}.")
    frontier = (f'run "embwarden frontier {deployment} --kind gaussian_noise", which measures which noise level '
                "stops these attacks at what cost to search quality")
    sentences.append({
        "pass": "Nothing to do: the next audit runs on schedule.",
        "warn": f"Look at it before it gets worse: {frontier}.",
        "gate": f"The gate is closed: no embeddings are served until a person reopens it or a version passes. "
                f"Next, {frontier}, then activate the version it recommends.",
        "rollback": f"The deployment was rolled back to the last version that passed. Next, {frontier}.",
        "inconclusive": "The audit could not judge this pipeline (see below why); it is not a pass.",
        "invalid": "The sample failed validation: fix the rows named below; no score was recorded.",
    }.get(verdict or "", "The audit did not finish: see the error below, then run it again."))
    return sentences


def of_run(run) -> list[str]:
    """`summary` of a ledger AuditRun (its scores on what they were measured, its version's transform)."""
    scores = {s.key: s.value for s in run.scores if "[" not in s.metric}
    bounds = {s.key: (s.ci_high, s.n) for s in run.scores if s.probe == "pac_privacy"}
    version = run.version
    return summary(scores, run.verdict, version.transform if version else None,
                   version.guarantee if version else None, run.deployment.name, bounds)
