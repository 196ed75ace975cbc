"""A layer-wise audit of a local encoder: how much each transformer layer's hidden state leaks.

`LayerEncoder(base, layer)` is one layer of a `LocalEncoder` seen as an encoder of its own: the
mean-pooled (over the same attention mask), normalised hidden state `hidden_states[layer]` of the
same tokenisation (batch size, max_length, truncation). Layer 0 is the embedding output, the last
is what the base pools, so the last layer's vectors are the base encoder's.

One forward pass with `output_hidden_states=True` yields every layer: `encode_layers` returns
them all at once, and the views of a `LayerStack` share one pass per list of texts (the
auxiliary corpus, the targets, the words bow_inversion re-embeds), so auditing seven layers does not
run the model seven times.

`audit_layers` fits each layer's attacker on that layer's vectors of the auxiliary corpus and
scores it on that layer's vectors of the targets, through the same `Auditor` as every audit (so
the same caches and cache rules: clean embeddings of the auxiliary corpus, and of the targets
only when they are synthetic). No transform is applied: this audits the encoder's internals.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from audits.audit import Auditor, embed_corpus, needs_of
from audits.corpora import Corpus
from audits.corpus import corpus_hash
from audits.encoders import LocalEncoder
from audits.errors import ConfigError, EncoderError
from audits.pipeline import Pipeline
from audits.probes import make_probe
from audits.results import Score
from audits.storage import Location

log = logging.getLogger(__name__)

# The probes a layer can be attacked with: each needs only vectors and the encoder as an oracle.
# (dp_audit and repeat_query measure a transform, and there is none here; generative_inversion
# trains for minutes per layer: run it on the layer this audit points at, with `embwarden audit`.)
LAYER_PROBES = ("bow_inversion", "attribute_inference", "candidate_inversion")
DEFAULT_PROBES = ("bow_inversion", "attribute_inference")
HEADLINE = "bow_inversion.token_f1"
AUC = "attribute_inference.auc"
# What the views of one LayerStack keep of texts they encoded (all layers of each), newest kept.
STACK_MEMORY_BYTES = 1 << 30


def layer_count(encoder: LocalEncoder) -> int:
    """How many hidden states the model returns: its transformer layers plus the embedding output."""
    config = encoder._config   # the base's config.json, read once
    for key in ("num_hidden_layers", "n_layers", "num_layers", "n_layer"):
        if isinstance(config.get(key), int):
            return int(config[key]) + 1
    import torch

    with torch.inference_mode():
        return len(_forward(encoder, ["layer count"])[0].hidden_states)


def layer_name(layer: int, count: int) -> str:
    if layer == 0:
        return "embeddings"
    return "output" if layer == count - 1 else f"layer {layer}"


def select_layers(spec: str | Sequence[int] | None, count: int, where: str = "layers") -> tuple[int, ...]:
    """The layers `spec` names (`all`, `3`, `0,3,6`, `2-4`), checked against the model's `count`;
    `where` names the setting in errors."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return tuple(range(count))
    chosen: list[int] = []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
        if match is None:
            raise ConfigError(f"{where}: {text!r} is not a layer; expected 'all', numbers and ranges such as "
                              f"0,3,{count - 1} or 2-4 (this model has layers 0 to {count - 1})")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ConfigError(f"{where}: range {text!r} runs backwards; write {high}-{low}")
        for layer in (low, high):
            if layer >= count:
                raise ConfigError(f"{where}: layer {layer} does not exist; this model has layers 0 to {count - 1} "
                                  f"(0 = the embedding output, {count - 1} = the output)")
        chosen += [n for n in range(low, high + 1) if n not in chosen]
    if not chosen:
        raise ConfigError(f"{where}: no layer named; expected 'all', numbers or ranges")
    return tuple(sorted(chosen))


def _forward(encoder: LocalEncoder, texts: list[str]):
    """The model's output with every hidden state, and the attention mask (call under inference_mode)."""
    tokenizer, model = encoder._model   # the base's own tokenizer and weights
    batch = tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt")
    return model(**batch, output_hidden_states=True), batch["attention_mask"]


def encode_layers(encoder: LocalEncoder, texts: Sequence[str], layers: Sequence[int] | None = None) -> np.ndarray:
    """Every chosen layer's pooled vectors from one forward pass per batch: float32 [layers, n, dim].

    Pooled and normalised as `encoder.encode` pools its output, with its batches (the same length
    sorting, batch size and max_length), so the last layer's rows are what `encoder.encode` returns.
    """
    import torch

    count = layer_count(encoder)
    chosen = select_layers(list(layers), count) if layers is not None else tuple(range(count))
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((len(chosen), 0, encoder.dimension), dtype=np.float32)
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    if len(unique) < len(texts):   # as LocalEncoder.encode: the same text twice costs once
        return encode_layers(encoder, [str(t) for t in unique], chosen)[:, inverse.ravel()]
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.empty((len(chosen), len(texts), encoder.dimension), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), encoder.batch_size):
            idx = order[start : start + encoder.batch_size]
            output, attention = _forward(encoder, [texts[i] for i in idx])
            states = output.hidden_states
            if states is None or len(states) != count:
                raise EncoderError(f"{encoder.model_dir}: the model returned "
                                   f"{0 if states is None else len(states)} hidden states, expected {count} "
                                   "(its layers and the embedding output)")
            mask = attention.unsqueeze(-1)
            for k, layer in enumerate(chosen):
                # The last one exactly as the base pools it (some models norm their last hidden state).
                hidden = output.last_hidden_state if layer == count - 1 else states[layer]
                weights = mask.to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                if encoder.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[k, idx] = pooled.float().numpy()
    return out


class LayerStack:
    """The chosen layers of one LocalEncoder, encoded together and remembered for the layers' views.

    `encode(texts)` runs the model once for a list of texts and keeps every layer's vectors (up to
    `max_bytes`, the oldest dropped first), so each view's later call with the same texts is free.
    What it keeps lives in memory only, for this audit.
    """

    def __init__(self, base: LocalEncoder, layers: Sequence[int] | None = None,
                 max_bytes: int = STACK_MEMORY_BYTES) -> None:
        self.base = base
        self.count = layer_count(base)
        self.layers = select_layers(list(layers), self.count) if layers is not None else tuple(range(self.count))
        self.max_bytes = max_bytes
        self._kept: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.forward_passes = 0      # lists of texts the model ran on
        self.encode_seconds = 0.0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        key = (corpus_hash(texts), len(texts))
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        started = time.perf_counter()
        vectors = encode_layers(self.base, texts, self.layers)
        self.encode_seconds += time.perf_counter() - started
        self.forward_passes += 1
        if vectors.nbytes <= self.max_bytes:
            self._kept[key] = vectors
            while sum(v.nbytes for v in self._kept.values()) > self.max_bytes:
                self._kept.popitem(last=False)
        return vectors

    def view(self, layer: int) -> LayerEncoder:
        return LayerEncoder(self.base, layer, stack=self)

    def views(self) -> list[LayerEncoder]:
        return [self.view(layer) for layer in self.layers]


class LayerEncoder:
    """One layer of a LocalEncoder as an Encoder: its normalised, mean-pooled hidden state.

    With a `stack` it reads from the stack's shared forward passes; alone it runs its own.
    """

    def __init__(self, base: LocalEncoder, layer: int, stack: LayerStack | None = None) -> None:
        if not isinstance(base, LocalEncoder):
            raise EncoderError(f"layers: a layer needs a local model directory, not a {type(base).__name__} "
                               "(the layers of an encoder behind an API are out of reach)")
        count = layer_count(base)
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 0 <= layer < count:
            raise ConfigError(f"layers: layer {layer!r} does not exist; this model has layers 0 to {count - 1} "
                              f"(0 = the embedding output, {count - 1} = the output)")
        if stack is not None and (stack.base is not base or layer not in stack.layers):
            raise ValueError(f"layer {layer} is not one of this stack's layers {stack.layers}")
        self.base = base
        self.layer = int(layer)
        self.count = count
        self.stack = stack

    @property
    def dimension(self) -> int:
        return self.base.dimension

    @property
    def fingerprint(self) -> str:
        return f"{self.base.fingerprint}-layer{self.layer}"

    @property
    def name(self) -> str:
        return layer_name(self.layer, self.count)

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.stack is not None:
            return self.stack.encode(texts)[self.stack.layers.index(self.layer)]
        return encode_layers(self.base, texts, [self.layer])[0]


@dataclass(frozen=True)
class LayerResult:
    """What the attackers of one layer scored: every probe's Scores (with 95% intervals), or its error."""

    layer: int
    name: str
    scores: tuple[Score, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def get(self, key: str) -> Score | None:
        """The score called `probe.metric` (`bow_inversion.token_f1`), or None."""
        return next((s for s in self.scores if s.key == key), None)

    @property
    def token_f1(self) -> Score | None:
        return self.get(HEADLINE)

    @property
    def auc(self) -> Score | None:
        return self.get(AUC)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "name": self.name, "scores": [s.to_dict() for s in self.scores],
                "errors": dict(self.errors), "timings": dict(self.timings)}


@dataclass(frozen=True)
class LayerAudit:
    """One row per audited layer, in order, and how the audit was set up."""

    layers: tuple[LayerResult, ...]
    layer_count: int                 # the model's hidden states: embedding output + transformer layers
    probes: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    auxiliary_texts: int = 0
    targets: int = 0
    forward_passes: int = 0          # lists of texts the model ran on, for all layers together
    timings: dict[str, float] = field(default_factory=dict)

    def __iter__(self) -> Iterator[LayerResult]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def leakiest(self, key: str = HEADLINE) -> LayerResult | None:
        """The layer with the highest value of `key` (the first on a tie), or None if none has it."""
        scored = [(score.value, -i, r) for i, r in enumerate(self.layers) if (score := r.get(key)) is not None]
        return max(scored, key=lambda t: t[:2])[2] if scored else None

    def to_dict(self) -> dict:
        return {"layers": [r.to_dict() for r in self.layers], "layer_count": self.layer_count,
                "probes": list(self.probes), "skipped": dict(self.skipped),
                "auxiliary_texts": self.auxiliary_texts, "targets": self.targets,
                "forward_passes": self.forward_passes, "timings": dict(self.timings)}


def layer_probes(probes: Sequence[str] | None, params: Mapping[str, dict], aux: Corpus, targets: Corpus,
                 seed: int) -> tuple[list[str], dict[str, str]]:
    """The probes to run and those skipped (by default, the ones the corpora cannot feed), with why."""
    if probes is not None:
        wrong = [p for p in probes if p not in LAYER_PROBES]
        if wrong:
            raise ConfigError(f"layers: probe(s) {wrong} do not run per layer; expected some of {list(LAYER_PROBES)}"
                              " (dp_audit and repeat_query measure a transform, and a layer audit has none)")
    names, skipped = list(probes or DEFAULT_PROBES), {}
    for name in list(names):
        needs = needs_of(make_probe(name, params.get(name), seed=seed))
        lacking = [w for w in sorted(needs) if getattr(targets, w) is None]
        lacking_aux = [w for w in sorted(needs - {"texts"}) if getattr(aux, w) is None]
        if not lacking and not lacking_aux:
            continue
        why = (f"the targets have no {', '.join(lacking)}" if lacking
               else f"the auxiliary corpus has no {', '.join(lacking_aux)}")
        if probes is not None:
            raise ConfigError(f"layers: {name} cannot run: {why}")
        skipped[name] = why
        names.remove(name)
    if not names:
        raise ConfigError(f"layers: no probe can run ({'; '.join(f'{p}: {w}' for p, w in skipped.items())})")
    return names, skipped


def audit_layers(encoder: LocalEncoder, aux: Corpus, targets: Corpus, probes: Sequence[str] | None = None,
                 params: Mapping[str, dict] | None = None, seed: int = 0, cache_dir: Location | None = None,
                 layers: Sequence[int] | None = None, synthetic_targets: bool = False,
                 version: str = "layers") -> LayerAudit:
    """Attack each layer of `encoder`: fitted on that layer's vectors of `aux`, scored on those of `targets`.

    `probes` defaults to bow_inversion and, where both corpora carry labels, attribute_inference.
    `cache_dir` keeps clean embeddings and fitted attackers as the Auditor does; the targets'
    embeddings are cached only when `synthetic_targets` (canaries): never production text.
    """
    from audits.transforms import Identity

    started = time.perf_counter()
    params = dict(params or {})
    if not isinstance(encoder, LocalEncoder):
        raise EncoderError(f"layers: a layer audit needs a local model directory, not a {type(encoder).__name__} "
                           "(the layers of an encoder behind an API are out of reach)")
    if not len(targets):
        raise ConfigError("layers: the targets hold no text")
    names, skipped = layer_probes(probes, params, aux, targets, seed)
    stack = LayerStack(encoder, layers)
    rows = []
    for view in stack.views():
        layer_started = time.perf_counter()
        pipeline = Pipeline(view, Identity())
        auditor = Auditor(pipeline, aux, seed=seed, cache_dir=cache_dir)
        cache = auditor.embedding_cache if synthetic_targets else None
        sample = embed_corpus(pipeline, targets, np.random.default_rng(seed + 2), version, prefix="target-",
                              cache=cache)
        results = [auditor.run(name, params.get(name), {"targets": sample}) for name in names]
        timings = {f"{r.probe}.{k}": v for r in results for k, v in r.timings.items()}
        timings["seconds"] = round(time.perf_counter() - layer_started, 3)
        rows.append(LayerResult(view.layer, view.name, tuple(s for r in results for s in r.scores),
                                {r.probe: r.error for r in results if r.error}, timings))
        f1 = rows[-1].token_f1
        log.info("layer %d%s: %s, %.1f s", view.layer, "" if view.name.startswith("layer") else f" ({view.name})",
                 f"token_f1 {f1.value:.3f}" if f1 else "no token_f1", timings["seconds"])
    return LayerAudit(tuple(rows), stack.count, tuple(names), skipped, len(aux), len(targets), stack.forward_passes,
                      {"encode_seconds": round(stack.encode_seconds, 3),
                       "total_seconds": round(time.perf_counter() - started, 3)})
