"""A general-English attacker corpus, built offline from text that Debian packages ship.

A deployment whose production text the attacker cannot see (no text column) still faces someone
who trains on public English; this corpus stands in for that text. Three sources, each real
prose written by people, none templated:

| source | Debian package | what | licence |
|---|---|---|---|
| `wordnet` | wordnet-base | WordNet 3.0 definitions and usage examples | WordNet 3.0 licence (BSD-style, Princeton) |
| `gcide` | dict-gcide | quotations from literature in the Collaborative International Dictionary of English | GPL-3+ |
| `fortunes` | fortunes, fortunes-min | the BSD fortune quotations and sayings | BSD / public domain |

The text is read from the installed files at build time and never redistributed by embwarden. The
built corpus (one sentence a line) is cached under the cache folder by a fingerprint of the source
files, so it is built once per machine; `sentences()` then shuffles and cuts it for a seed.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from audits import storage
from audits.errors import ConfigError
from audits.storage import Location

log = logging.getLogger(__name__)

WORDNET_DIR = Path(os.environ.get("EMBWARDEN_WORDNET_DIR", "/usr/share/wordnet"))
GCIDE_FILE = Path(os.environ.get("EMBWARDEN_GCIDE_FILE", "/usr/share/dictd/gcide.dict.dz"))
FORTUNES_DIR = Path(os.environ.get("EMBWARDEN_FORTUNES_DIR", "/usr/share/games/fortunes"))
# Bump when parsing changes: cached builds of the old format are then ignored.
BUILD_FORMAT = 1
MIN_WORDS, MAX_WORDS = 4, 40


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    files: tuple[Path, ...]
    reader: Callable[[], Iterator[str]]

    def missing(self) -> list[Path]:
        return [f for f in self.files if not f.exists()]


def _sources() -> dict[str, Source]:
    fortunes = tuple(sorted(p for p in FORTUNES_DIR.glob("*") if p.is_file() and "." not in p.name)) \
        if FORTUNES_DIR.is_dir() else (FORTUNES_DIR / "fortunes",)
    return {
        "wordnet": Source("wordnet", "wordnet-base",
                          tuple(WORDNET_DIR / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")), _wordnet),
        "gcide": Source("gcide", "dict-gcide", (GCIDE_FILE,), _gcide),
        "fortunes": Source("fortunes", "fortunes", fortunes, _fortunes),
    }


SOURCES = ("wordnet", "gcide", "fortunes")


def _clean(text: str) -> str | None:
    """One sentence in plain form, or None when it is too short, too long or not prose."""
    text = " ".join(text.replace("_", " ").split()).strip(" ;,")
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in text) / len(text)
    if letters < 0.85 or any(ch in text for ch in "{}[]<>|\\=@#~^") or ". . ." in text:
        return None
    return text[0].upper() + text[1:]


_EXAMPLE = re.compile(r'"([^"]+)"')


def _wordnet() -> Iterator[str]:
    """Each synset's definition and its quoted usage examples (the gloss after `|`)."""
    for source in _sources()["wordnet"].files:
        with source.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:
                    continue   # the licence header lines start with two spaces
                gloss = line.split("|", 1)[1]
                yield from _EXAMPLE.findall(gloss)
                yield _EXAMPLE.sub("", gloss).split(";")[0]


_QUOTE_BLOCK = re.compile(r"((?:\n {10,}\S[^\n]*)+)")
_ATTRIBUTED = re.compile(r"^(.+?)\s*--\s*[A-Z][^-]*$")


def _gcide() -> Iterator[str]:
    """Quotations from literature: deeply indented blocks ending in `--Author.`."""
    with gzip.open(_sources()["gcide"].files[0], "rt", encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    for block in _QUOTE_BLOCK.findall(text):
        match = _ATTRIBUTED.match(" ".join(block.split()))
        if match:
            yield match.group(1)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def _fortunes() -> Iterator[str]:
    """Fortune cookies without their attribution lines, split into sentences."""
    for path in _sources()["fortunes"].files:
        with path.open(encoding="utf-8", errors="replace") as fh:
            entries = fh.read().split("\n%\n")
        for entry in entries:
            body = "\n".join(line for line in entry.splitlines() if not line.strip().startswith("--"))
            if re.search(r"^\s*\w+:", body, re.M):   # dialogues and Q/A lists are not prose
                continue
            yield from _SENTENCE_END.split(" ".join(body.split()))


def _read(kinds: Iterable[str]) -> list[str]:
    sources = _sources()
    seen: set[str] = set()
    out: list[str] = []
    for kind in kinds:
        for raw in sources[kind].reader():
            text = _clean(raw)
            if text and text.lower() not in seen:
                seen.add(text.lower())
                out.append(text)
    return out


def check_installed(kinds: Iterable[str] = SOURCES) -> None:
    """Raise a ConfigError naming the Debian packages to install when a source is missing."""
    sources = _sources()
    unknown = [k for k in kinds if k not in sources]
    if unknown:
        raise ConfigError(f"general corpus: unknown source {unknown[0]!r}; expected some of {list(SOURCES)}")
    missing = [sources[k] for k in kinds if sources[k].missing()]
    if missing:
        packages = " ".join(sorted({s.package for s in missing}))
        files = ", ".join(str(f) for s in missing for f in s.missing()[:1])
        raise ConfigError(f"general corpus: {files} not found; it comes from the Debian package(s) {packages}: "
                          f"install them with `sudo apt-get install {packages}` (or `make corpora`)")


def fingerprint(kinds: Iterable[str]) -> str:
    """Changes when a source file or the parser changes."""
    sources = _sources()
    h = hashlib.sha256(f"format={BUILD_FORMAT}".encode())
    for kind in kinds:
        for path in sources[kind].files:
            stat = path.stat()
            h.update(f"{kind}:{path}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]


def build(cache_dir: Location | None, kinds: tuple[str, ...] = SOURCES) -> list[str]:
    """Every sentence of the sources, in a stable order; read from the cache (a folder or an object
    store, see audits.storage) when built before."""
    kinds = tuple(kinds)
    check_installed(kinds)
    path = cache_dir / "corpora" / f"general-{'+'.join(kinds)}-{fingerprint(kinds)}.txt" if cache_dir else None
    cached = storage.read_bytes(path) if path is not None else None
    if cached is not None:
        return cached.decode("utf-8").splitlines()
    texts = _read(kinds)
    log.info("general corpus built: %d sentences from %s", len(texts), ", ".join(kinds))
    if path is not None:
        storage.write_bytes(path, "\n".join(texts).encode("utf-8"))
    return texts


def sentences(size: int, seed: int, cache_dir: Location | None = None, kinds: tuple[str, ...] = SOURCES,
              exclude: Iterable[str] = ()) -> list[str]:
    """`size` sentences drawn for `seed` (the same ones on the same installation), none of `exclude`."""
    texts = build(cache_dir, kinds)
    if exclude:
        banned = {t.lower() for t in exclude}
        texts = [t for t in texts if t.lower() not in banned]
    if size > len(texts):
        raise ConfigError(f"general corpus: asked for {size} sentences, the sources {list(kinds)} give {len(texts)}")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [texts[i] for i in order[:size]]


def wordnet_pairs(size: int, seed: int) -> tuple[list[str], list[str]]:
    """Real retrieval pairs: a synset's usage example (query) and its definition (document), `size`
    synsets drawn with `seed`. Queries and documents share a meaning, rarely words: what retrieval of
    real text needs, where the synthetic paraphrases share their slots."""
    import random

    pairs = []
    for source in _sources()["wordnet"].files:
        with source.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:
                    continue
                gloss = line.split("|", 1)[1]
                examples = [e for e in (_clean(x) for x in _EXAMPLE.findall(gloss)) if e]
                definition = _clean(_EXAMPLE.sub("", gloss).split(";")[0])
                if examples and definition:
                    pairs.append((examples[0], definition))
    pairs = sorted(set(pairs))
    random.Random(seed).shuffle(pairs)
    picked = pairs[:size]
    return [q for q, _ in picked], [d for _, d in picked]
