"""A deployment version's pipeline (encoder + transform) and the cache of its clean embeddings.

The attacker embeds the auxiliary corpus through the same pipeline as production. Encoding is
the expensive step, so clean encoder output is cached per (encoder fingerprint, corpus hash)
and the transform, which is cheap and random, is applied afresh each time.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

import numpy as np

from audits import storage
from audits.corpus import corpus_hash
from audits.encoders import Encoder
from audits.storage import Location
from audits.transforms import Transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipeline:
    encoder: Encoder
    transform: Transform

    @property
    def dimension(self) -> int:
        """The dimension of what the pipeline outputs (a projection changes it)."""
        return self.transform.output_dimension(self.encoder.dimension)

    def embed(self, texts: list[str], rng: np.random.Generator, cache: EmbeddingCache | None = None) -> np.ndarray:
        clean = cache.encode(self.encoder, texts) if cache else self.encoder.encode(texts)
        return self.transform.apply(clean, rng)


class EmbeddingCache:
    """Clean encoder output of public or synthetic corpora, on disk as .npy files.

    Never used for production text: only the auxiliary corpus and canaries go through it.
    """

    def __init__(self, root: Location) -> None:
        self.root = storage.as_location(root)

    def path(self, encoder: Encoder, texts: list[str]) -> Location:
        return self.root / encoder.fingerprint / f"{corpus_hash(texts)}-{len(texts)}.npy"

    def encode(self, encoder: Encoder, texts: list[str]) -> np.ndarray:
        path = self.path(encoder, texts)
        data = storage.read_bytes(path)
        if data is not None:
            try:
                vectors = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as exc:   # truncated or not a .npy: a miss
                log.warning("embedding cache entry %s unreadable (%s); encoding afresh", path.name, exc)
            else:
                if vectors.shape == (len(texts), encoder.dimension):
                    log.info("embedding cache hit: %d texts (%s)", len(texts), path.name)
                    return vectors
        started = time.perf_counter()
        vectors = encoder.encode(texts)
        log.info("encoded %d texts in %.1f s", len(texts), time.perf_counter() - started)
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        storage.write_bytes(path, buffer.getvalue())   # whole or not at all
        return vectors
