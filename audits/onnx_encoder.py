"""ONNX Runtime for local Hugging Face encoders: the torch path's vectors, faster on a CPU.

The model, with mean pooling and L2 normalisation inside the graph, is exported once per encoder
fingerprint and torch version, checked against the torch path on `CHECK_TEXTS` (the export is
used only if no coordinate differs by more than `TOLERANCE`, so audits of a table torch embedded
stay exact) and kept under `cache_root()`, a folder of public model weights only: no text ever
goes there. Later processes load it after checking its SHA-256.

Why these choices (all-MiniLM-L6-v2, 5,000 synthetic messages, 2 cores; `make bench SECTIONS=encoder`):
- torch's TorchScript exporter, not the dynamo one: its graph ran 10% faster under ORT;
- one thread per session run and one run per core on different batches: GEMMs of a 32-text batch
  are too small to split across cores without waiting (301 against 281 texts/s);
- the caller sorts by token count, not characters (see `LocalEncoder.encode`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from audits.errors import EncoderError

if TYPE_CHECKING:
    from audits.encoders import LocalEncoder

log = logging.getLogger(__name__)
# ONNX Runtime's Linux builds carry Microsoft's telemetry (1DS): a device id and an event store under
# ~/.cache/Microsoft, and an uploader. A privacy auditor sends nothing anywhere: off before its import.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

CACHE_ENV = "EMBWARDEN_ONNX_CACHE"
THREADS_ENV = "EMBWARDEN_ENCODER_THREADS"
EXPORT_FORMAT = 1      # bump when the exported graph changes: older exports are then ignored
TOLERANCE = 1e-4       # max abs difference from the torch path an export may show
OPSET = 17
# Short, long (truncated at max_length), padded beside each other, non-ASCII, digits, empty.
CHECK_TEXTS = (
    "Please reset my password.",
    "My name is Ana Oliveira and my account number is 40021937; the card ending 4417 was charged twice.",
    "I was diagnosed with type 2 diabetes last spring and need the claim form for my insulin.",
    "Grüße aus München — das Paket kam beschädigt an, bitte um Rückerstattung. 東京 ok",
    "",
    " ".join(["the invoice for order 88231 is overdue and the refund has not arrived yet"] * 40),
)


def cache_root() -> Path:
    """EMBWARDEN_ONNX_CACHE, else $XDG_CACHE_HOME/embwarden/onnx, else ~/.cache/embwarden/onnx."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "embwarden" / "onnx"


def threads() -> int:
    """Cores this process may use (its CPU affinity, so a container's or a worker's limit counts)."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Export:
    """An exported model's file and what its check measured."""

    path: Path
    inputs: tuple[str, ...]
    max_abs_diff: float


class OnnxModel:
    """One ONNX Runtime session, run on several batches at once (one core each)."""

    def __init__(self, export: Export, workers: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(export.path), options, providers=["CPUExecutionProvider"])
        self.inputs = export.inputs
        self.workers = workers or threads()
        self.max_abs_diff = export.max_abs_diff

    def run(self, feeds) -> list[np.ndarray]:
        """One output (rows of vectors) per feed; a feed maps each input name to int64 arrays."""
        feeds = list(feeds)

        def one(feed: dict[str, np.ndarray]) -> np.ndarray:
            return self.session.run(None, {k: feed[k] for k in self.inputs})[0]

        if self.workers == 1 or len(feeds) == 1:
            return [one(f) for f in feeds]
        with ThreadPoolExecutor(self.workers) as pool:   # session.run releases the GIL
            return list(pool.map(one, feeds))


def load(encoder: LocalEncoder) -> OnnxModel:
    """The encoder's export from the cache, made (and checked) first if there is none.

    Raises EncoderError when ONNX Runtime is missing, the model cannot be exported, or its export
    does not match the torch path within TOLERANCE.
    """
    try:
        import onnxruntime  # noqa: F401
        import torch
    except ImportError as exc:
        raise EncoderError(f"the onnx backend needs onnxruntime ({exc})") from exc
    folder = cache_root() / f"{encoder.fingerprint}-torch{torch.__version__}-f{EXPORT_FORMAT}"
    export = _read(folder)
    if export is None:
        if (folder / "meta.json").is_file():   # damaged: made again (a folder without meta is never there)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            export = _export(encoder, folder)
        except OSError as exc:   # e.g. a cache folder this user cannot write
            raise EncoderError(f"cannot keep an ONNX export in {folder.parent} ({exc}); set {CACHE_ENV}") from exc
    return OnnxModel(export)


def _read(folder: Path) -> Export | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        model = folder / "model.onnx"
        if _sha256(model) != meta["sha256"]:
            log.warning("ONNX export %s does not match its recorded SHA-256; exporting afresh", folder.name)
            return None
        return Export(model, tuple(meta["inputs"]), float(meta["max_abs_diff"]))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ONNX export %s unreadable (%s); exporting afresh", folder.name, exc)
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _export(encoder: LocalEncoder, folder: Path) -> Export:
    import torch

    tokenizer, model = encoder._model
    sample = tokenizer(list(CHECK_TEXTS[:2]), padding=True, return_tensors="pt")
    forward_args = inspect.signature(model.forward).parameters
    inputs = tuple(k for k in sample if k in forward_args)
    pooled = _pooled(model, inputs, encoder.normalize)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        path = staging / "model.onnx"
        dynamic = {name: {0: "batch", 1: "sequence"} for name in inputs}
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation and tracer notes
            try:
                torch.onnx.export(pooled, tuple(sample[k] for k in inputs), str(path), input_names=list(inputs),
                                  output_names=["sentence_embedding"], dynamic_axes=dynamic,
                                  opset_version=OPSET, dynamo=False)
            except Exception as exc:   # an architecture the exporter cannot trace: a reason, not a crash
                raise EncoderError(f"cannot export {encoder.model_dir} to ONNX: {type(exc).__name__}: {exc}") from exc
        export = Export(path, inputs, 0.0)
        diff = _max_abs_diff(encoder, OnnxModel(export, workers=1))
        if not diff <= TOLERANCE:
            raise EncoderError(f"the ONNX export of {encoder.model_dir} differs from torch by {diff:.2e} "
                               f"(at most {TOLERANCE:.0e} allowed)")
        (staging / "meta.json").write_text(json.dumps({
            "sha256": _sha256(path), "inputs": list(inputs), "max_abs_diff": diff, "opset": OPSET,
            "torch": torch.__version__, "model_dir": str(encoder.model_dir)}, indent=1))
        try:
            staging.rename(folder)   # whole or not at all; another process may have won the race
        except OSError:
            if _read(folder) is None:
                raise
        log.info("exported %s to ONNX (max abs difference from torch %.1e)", encoder.model_dir.name, diff)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kept = _read(folder)
    if kept is None:
        raise EncoderError(f"the ONNX export in {folder} could not be read back")
    return kept


def _max_abs_diff(encoder: LocalEncoder, model: OnnxModel) -> float:
    texts = list(CHECK_TEXTS)
    ours = encoder.encode_with(texts, model.run, "np")
    reference = encoder.encode_with(texts, encoder.run_torch, "pt")
    return float(np.abs(ours - reference).max())


def _pooled(model, inputs: tuple[str, ...], normalize: bool):
    """The model, then `pool`: what `LocalEncoder`'s torch path computes, as one traceable module."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args):
            batch = dict(zip(inputs, args, strict=True))
            return pool(self.model(**batch).last_hidden_state, batch["attention_mask"], normalize)

    return Pooled().eval()


def pool(hidden, attention_mask, normalize: bool):
    """Mean over the tokens the mask keeps, then unit length: sentence-transformers' pooling."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled


__all__ = ["OnnxModel", "cache_root", "load", "pool", "threads"]
