"""The attacker's corpus of a deployment, from its `auxiliary_corpus` configuration.

Public corpora (synthetic, general, a file, a SQL query) are rebuilt from configuration in any
task, and their embeddings and fitted models are cached across runs. A `production` slice is the
deployment's own text: the run's `sample` step draws it, disjoint from the audited sample, into
the run's owner-only folder; the probes read it from there and cache what they embed or fit on
it in that folder only (`run_cache_dir`), and the run's cleanup deletes all of it.
"""

from __future__ import annotations

import io
import logging

import numpy as np

from audits import corpora, general, storage
from audits.corpora import Corpus
from audits.errors import ConfigError
from audits.results import Sample
from audits.storage import Location
from monitors.config import EmbwardenConfig, corpus_parts, uses_production
from monitors.deployments import sql_url

log = logging.getLogger(__name__)

PRODUCTION_FILE = "attacker-texts.npz"
RUN_CACHE = "attacker-cache"


def production_size(config: EmbwardenConfig, deployment: str) -> int:
    ccfg = config.deployment(deployment).auxiliary_corpus
    return sum(part.size for part in corpus_parts(ccfg) if part.kind == "production")


def production_seed(config: EmbwardenConfig, deployment: str) -> int:
    ccfg = config.deployment(deployment).auxiliary_corpus
    return next(part.seed for part in corpus_parts(ccfg) if part.kind == "production")


def check(config: EmbwardenConfig, deployment: str, source, version: str) -> None:
    """Fail with a ConfigError, naming the deployment and the column, when the configured corpus
    cannot be built: a production slice larger than the version's texts leave beside the sample,
    or a general corpus whose Debian packages are missing."""
    dep = config.deployment(deployment)
    for part in corpus_parts(dep.auxiliary_corpus):
        if part.kind == "general":
            general.check_installed(part.sources)
    if not uses_production(dep.auxiliary_corpus):
        return
    wanted = production_size(config, deployment) + dep.sample_size
    have = source.count_texts(version)
    if have < wanted:
        column = dep.source.columns.text
        raise ConfigError(
            f"deployments.{deployment}.auxiliary_corpus: kind production asks for "
            f"{production_size(config, deployment)} texts besides a sample of {dep.sample_size}, but column "
            f"{column!r} of version {version} has {have} non-empty texts; lower its size (at most "
            f"{max(0, have - dep.sample_size)}) or sample_size")


def draw_production(config: EmbwardenConfig, deployment: str, source, version: str, sample: Sample, seed: int,
                    folder: Location) -> int:
    """Draw the production slice (disjoint from `sample`) into the run's folder, owner-only; its size."""
    size = production_size(config, deployment)
    texts = source.draw_texts(version, size, seed, exclude=sample.ids)
    if len(texts) < size:
        column = config.deployment(deployment).source.columns.text
        raise ConfigError(f"deployments.{deployment}.auxiliary_corpus: kind production asks for {size} texts "
                          f"besides the sample, column {column!r} of version {version} gave {len(texts)}")
    buffer = io.BytesIO()
    np.savez(buffer, texts=np.array(texts, dtype=str))
    storage.write_bytes(folder / PRODUCTION_FILE, buffer.getvalue())
    return len(texts)


def read_production(folder: Location) -> tuple[str, ...]:
    data = storage.read_bytes(folder / PRODUCTION_FILE)
    if data is None:
        raise ConfigError(f"the run's production slice is gone ({PRODUCTION_FILE} not in the run's folder); "
                          "the run's sample step draws it: retry the run from `sample`")
    with np.load(io.BytesIO(data), allow_pickle=False) as texts:
        return tuple(str(t) for t in texts["texts"])


def corpus(config: EmbwardenConfig, deployment: str, folder: Location | None = None) -> Corpus:
    """The attacker's corpus as configured; `folder` is the run's, where a production slice lies."""
    parts = [_part(config, deployment, part, folder) for part in
             corpus_parts(config.deployment(deployment).auxiliary_corpus)]
    return parts[0] if len(parts) == 1 else combine(parts)


def public_corpus(config: EmbwardenConfig, deployment: str) -> Corpus:
    """The configured corpus without its production parts: for work outside an audit run (the
    frontier sweep), where production text may not be held. A ConfigError when nothing is left."""
    parts = [part for part in corpus_parts(config.deployment(deployment).auxiliary_corpus)
             if part.kind != "production"]
    if not parts:
        raise ConfigError(f"deployments.{deployment}.auxiliary_corpus: only production text, which exists only "
                          "inside an audit run; add a public corpus (general, synthetic, file or sql) to the list")
    built = [_part(config, deployment, part, None) for part in parts]
    return built[0] if len(built) == 1 else combine(built)


def _part(config: EmbwardenConfig, deployment: str, ccfg, folder: Location | None) -> Corpus:
    if ccfg.kind == "synthetic":
        return corpora.synthetic(ccfg.size, ccfg.seed)
    if ccfg.kind == "file":
        return corpora.read_file(config.resolve(ccfg.path))
    if ccfg.kind == "general":
        return Corpus(tuple(general.sentences(ccfg.size, ccfg.seed, config.cache_root,
                                              tuple(ccfg.sources))))
    if ccfg.kind == "production":
        if folder is None:
            raise ConfigError(f"deployments.{deployment}.auxiliary_corpus: kind production exists only inside "
                              "an audit run (the DAG); for `embwarden audit`, give the texts as a file")
        return Corpus(read_production(folder))
    return corpora.read_sql(sql_url(config, ccfg, f"deployments.{deployment}.auxiliary_corpus"), ccfg.query)


def combine(parts: list[Corpus]) -> Corpus:
    """One corpus of several: a part without secrets holds none ({}); labels are kept when every part has them."""
    texts = tuple(t for p in parts for t in p.texts)
    secrets = tuple(s for p in parts for s in (p.secrets or ({},) * len(p))) \
        if any(p.secrets is not None for p in parts) else None
    labels = tuple(x for p in parts for x in p.labels) if all(p.labels is not None for p in parts) else None
    return Corpus(texts, secrets, labels)


def cache_dir(config: EmbwardenConfig, deployment: str, folder: Location) -> Location:
    """Where the probes cache embeddings and models: the shared cache for public corpora, the run's
    own folder when the corpus holds production text (deleted with it at cleanup)."""
    if uses_production(config.deployment(deployment).auxiliary_corpus):
        return folder / RUN_CACHE
    return config.cache_root


def delete(folder: Location) -> bool:
    """Remove the run's production slice and everything embedded or fitted on it."""
    slice_removed = storage.remove(folder / PRODUCTION_FILE)
    return storage.remove_tree(folder / RUN_CACHE) or slice_removed
