"""What the word-level probes count as a word: the content words of a text, the words an attacker
recovers and a secret is made of. Stop words are excluded on both sides: recovering "the" is no leak.

Shared by bow_inversion, generative_inversion and repeat_query (and the coverage measure), so that
their token F1 and secret recovery count the same words. Not a probe.
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def content_words(text: str, stop_words: frozenset[str]) -> set[str]:
    """The set of lower-cased content words of a text: what the attack tries to recover."""
    return {w for w in _WORD.findall(text.lower()) if w not in stop_words and len(w) > 1}


def by_count(counts: Counter[str]) -> list[tuple[str, int]]:
    """Words by falling count, ties alphabetically: the same order in every process (a Counter
    filled from sets keeps the sets' order, which string hashing randomises per process)."""
    return sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
