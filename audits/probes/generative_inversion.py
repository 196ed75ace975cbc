"""Generative inversion (GEIA, Li et al. 2023; vec2text, Morris et al. 2023): the vector is decoded back to text.

A small causal transformer learns, from the auxiliary corpus embedded through the deployment's
own pipeline, to write a text given its vector: an MLP turns the vector into a few prefix
embeddings, and the decoder generates wordpieces after them. Scored on the sample, beam search
proposes texts; where the pipeline is reachable as an oracle, every beam candidate is
re-embedded and the one closest to the target vector wins (vec2text's idea, without its
iterative corrector). Metrics: corpus BLEU, content-word F1, exact match, cosine of the
re-embedded output to the target, and the share of secret words written out.

Everything is sized for CPUs: the softmax covers only the wordpieces of the auxiliary corpus,
attention keeps a key/value cache during beam search, and training stops at a wall-clock budget.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from audits.encoders import BUNDLED_MODEL, bundled_model_dir
from audits.errors import ProbeError
from audits.metrics import mean_with_ci, proportion_with_ci, set_prf, statistic_with_ci
from audits.params import Bool, Int, Real, parameters
from audits.probes.base import Auxiliary, Embed
from audits.probes.bow_inversion import _stop_words, content_words, flush_denormals
from audits.results import Sample, Score

log = logging.getLogger(__name__)

_PIECE = re.compile(r"\w+|[^\w\s]")
_SPACED_APOSTROPHE = re.compile(r"(?<=\w) ' (?=\w)")


def normalize(text: str) -> str:
    """Lower-cased words and punctuation marks separated by single spaces.

    Wordpiece decoding lower-cases and puts spaces around punctuation ("x @ example. com"), which
    says nothing about what leaked; outputs and references are compared in this form.
    """
    return " ".join(_PIECE.findall(text.lower()))


@contextmanager
def _cpu_kernels(device) -> Iterator[None]:
    """On CPU: denormals flushed, and the math attention kernel (the flash kernel's backward is slower
    at these short lengths)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if device.type != "cpu":
        yield
        return
    with flush_denormals(), sdpa_kernel(SDPBackend.MATH):
        yield


def _autocast(device):
    """bf16 matmuls where the hardware has them (AVX512-BF16 CPUs, recent GPUs); weights, optimiser
    state and losses stay float32. Measured on two AVX512-BF16 cores, one training step: 0.75 s in
    float32, 0.3 s in bf16. Enter it per step: autocast caches the bf16 copies of the weights for as
    long as the context lasts, so one context around all of training would keep the initial weights."""
    import torch

    if device.type == "cuda":
        enabled = torch.cuda.is_bf16_supported()
    else:
        enabled = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@cache
def _modules():
    """The decoder's torch modules, defined on first use so that importing the probe stays cheap."""
    import torch

    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        """A pre-LN causal self-attention block that can extend a key/value cache (cheap beam search)."""

        def __init__(self, width: int, heads: int, dropout: float) -> None:
            super().__init__()
            self.heads, self.dropout = heads, dropout
            self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
            self.drop = nn.Dropout(dropout)

        def forward(self, x, cache=None):
            b, t, w = x.shape
            q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(self.norm1(x)).split(w, -1))
            if cache is not None:  # one new position attends to everything before it
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None,
                                               dropout_p=self.dropout if self.training else 0.0)
            x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, t, w)))
            return x + self.drop(self.mlp(self.norm2(x))), (k, v)

    class Decoder(nn.Module):
        """[prefix(vector); tokens] -> next-token logits, output layer tied to the token embeddings."""

        def __init__(self, tokens, positions, dim_in: int, prefix_tokens: int, layers: int,
                     dropout: float) -> None:
            super().__init__()
            width = tokens.shape[1]
            self.prefix_tokens = prefix_tokens
            self.tokens = nn.Embedding.from_pretrained(tokens, freeze=False)
            self.positions = nn.Embedding.from_pretrained(positions, freeze=False)
            self.prefix = nn.Sequential(nn.LayerNorm(dim_in), nn.Linear(dim_in, 2 * width), nn.GELU(),
                                        nn.Linear(2 * width, prefix_tokens * width))
            heads = next(h for h in range(max(1, width // 64), 0, -1) if width % h == 0)  # heads ~64 wide
            self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
            self.norm = nn.LayerNorm(width)
            self.drop = nn.Dropout(dropout)

        def forward(self, vectors, tokens, caches=None, start: int = 0):
            """Logits after each position of `tokens`; with `vectors` the prefix is prepended (no cache yet)."""
            x = self.tokens(tokens)
            if vectors is not None:
                x = torch.cat([self.prefix(vectors).view(len(vectors), self.prefix_tokens, -1), x], 1)
            x = self.drop(x + self.positions(torch.arange(start, start + x.shape[1], device=x.device)))
            new = []
            for i, block in enumerate(self.blocks):
                x, kv = block(x, None if caches is None else caches[i])
                new.append(kv)
            h = self.norm(x[:, -tokens.shape[1]:])
            return h @ self.tokens.weight.T, new

    return Decoder


class GenerativeInversion:
    """Vector -> text decoder trained on the auxiliary corpus; the output is compared with the true text.

    The attacker's tokenizer and initial token (and position) embeddings come from `decoder_init`,
    a Hugging Face model directory of the attacker's choosing (the bundled MiniLM by default);
    its hidden size is the decoder's width. Training stops after `epochs` or `train_seconds`,
    whichever comes first: on two idle CPU cores 15 epochs over 8,500 texts take about 7.5
    minutes and bind, so scores are reproducible for a seed; the wall clock only cuts a fit on a
    busy machine (logged as a warning, since its score then depends on the machine's load).
    `make bench` measures its strength (section `generative`).
    """

    name = "generative_inversion"
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {
        "bleu": (0, 100), "token_f1": (0, 1), "exact_match": (0, 1), "cosine": (-1, 1), "secret_recovery": (0, 1)}
    needs = ("texts",)
    common_word_share = 0.05  # words in more than this share of aux texts identify nobody (as in bow_inversion)
    min_texts = 50

    @parameters
    def __init__(self, seed: int = 0, decoder_init: str = BUNDLED_MODEL, layers: Int(1, 48) = 3,
                 prefix_tokens: Int(1, 64) = 4, max_tokens: Int(2, 512) = 48, epochs: Int(1, 10_000) = 15,
                 train_seconds: Real(above=0, high=86_400) = 570.0, learning_rate: Real(above=0, high=10) = 1e-3,
                 batch_size: Int(1, 4096) = 32, dropout: Real(0, below=1) = 0.0, beam_size: Int(1, 64) = 4,
                 rerank: Bool = True, max_targets: Int(1, 100_000) = 200,
                 bootstrap_resamples: Int(100, 100_000) = 1000, correction_steps: Int(0, 100) = 1,
                 correction_alpha: Real(above=0, high=4) = 1.0) -> None:
        if decoder_init != BUNDLED_MODEL and not (Path(decoder_init).expanduser() / "config.json").is_file():
            raise ValueError(f"decoder_init: {decoder_init} is not a Hugging Face model "
                             f"directory (no config.json); use {BUNDLED_MODEL!r} or a path")
        self.seed = seed
        self.decoder_init = decoder_init
        self.layers = layers
        self.prefix_tokens = prefix_tokens
        self.max_tokens = max_tokens
        self.epochs = epochs
        self.train_seconds = float(train_seconds)
        self.learning_rate = float(learning_rate)
        self.batch_size = batch_size
        self.dropout = float(dropout)
        self.beam_size = beam_size
        self.rerank = bool(rerank)
        self.max_targets = max_targets
        self.bootstrap_resamples = bootstrap_resamples
        # vec2text-style correction through the oracle (only where the pipeline is callable)
        self.correction_steps = correction_steps
        self.correction_alpha = float(correction_alpha)

    # -- fit -------------------------------------------------------------------------------
    def fit(self, aux: Auxiliary) -> GenerativeInversion:
        import torch

        texts, vectors = aux.texts, np.asarray(aux.vectors, dtype=np.float32)
        if len(texts) < self.min_texts:
            raise ProbeError(f"generative_inversion.fit: auxiliary corpus has {len(texts)} texts, "
                             f"expected >= {self.min_texts}")
        tokenizer, token_table, position_table = self._load_init()
        # Wordpieces -> [CLS] text [SEP]; [CLS] starts generation and [SEP] ends it.
        pieces = tokenizer(list(texts), add_special_tokens=True, truncation=True,
                           max_length=self.max_tokens + 1)["input_ids"]
        specials = [tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id]
        if any(s is None for s in specials):
            raise ProbeError(f"generative_inversion.decoder_init: the tokenizer of {self.decoder_init} lacks "
                             "[PAD]/[CLS]/[SEP]/[UNK] tokens")
        # Only wordpieces the auxiliary corpus uses can be written: a ~4k instead of ~30k softmax.
        vocab = np.array(specials + sorted({p for ids in pieces for p in ids} - set(specials)), dtype=np.int64)
        local = {int(p): i for i, p in enumerate(vocab)}
        self.vocabulary_, self.tokenizer_ = vocab, tokenizer
        sequences = [[local[p] for p in ids] for ids in pieces]

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(self.seed)
        span = self.prefix_tokens + self.max_tokens + 1
        if len(position_table) < span:  # too few pretrained positions: learn the rest from scratch
            extra = torch.randn(span - len(position_table), position_table.shape[1]) * position_table.std()
            position_table = torch.cat([position_table, extra])
        decoder = _modules()(token_table[torch.from_numpy(vocab)].clone(), position_table[:span].clone(),
                             vectors.shape[1], self.prefix_tokens, self.layers, self.dropout).to(device)
        with _cpu_kernels(device):
            self._train(decoder, vectors, sequences, device)
        decoder.eval()
        self.model_, self.device_, self.shape_ = decoder, device, (len(vocab), span, vectors.shape[1])
        self.embed_: Embed | None = aux.embed

        stop = _stop_words()
        counts = Counter(w for t in texts for w in content_words(t, stop))
        self.common_words_ = frozenset(w for w, c in counts.items() if c > self.common_word_share * len(texts))
        return self

    def __getstate__(self) -> dict:
        """Pickled (the audit's model cache) as a state dict on CPU, so torch stays a lazy import."""
        state = dict(self.__dict__)
        if "model_" in state:
            state["model_"] = {k: v.cpu() for k, v in state["model_"].state_dict().items()}
            state["device_"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if isinstance(state.get("model_"), dict):
            import torch

            vocab, span, dim_in = self.shape_
            width = state["model_"]["tokens.weight"].shape[1]
            self.device_ = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            decoder = _modules()(torch.zeros(vocab, width), torch.zeros(span, width), dim_in, self.prefix_tokens,
                                 self.layers, self.dropout)
            decoder.load_state_dict(state["model_"])
            self.model_ = decoder.to(self.device_).eval()

    def _load_init(self):
        """Tokenizer, token embeddings and position embeddings of the attacker's `decoder_init` model."""
        from transformers import AutoModel, AutoTokenizer

        path = bundled_model_dir() if self.decoder_init == BUNDLED_MODEL else Path(self.decoder_init).expanduser()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ProbeError(f"generative_inversion.decoder_init: cannot load {path}: {exc}") from exc
        tokens = model.get_input_embeddings().weight.detach().float()
        positions = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
        positions = positions.weight.detach().float() if positions is not None else tokens[:0]
        return tokenizer, tokens, positions

    def _batches(self, lengths: np.ndarray, gen) -> list[np.ndarray]:
        """Shuffled batches of texts of similar length (less padding), in shuffled order."""
        import torch

        order = torch.randperm(len(lengths), generator=gen).numpy()
        chunk = self.batch_size * 50
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]

    def _train(self, decoder, vectors: np.ndarray, sequences: list[list[int]], device) -> None:
        """Teacher forcing with AdamW; the learning rate warms up, then decays linearly to zero over the
        planned steps or the time budget, whichever runs out first."""
        import torch

        lengths = np.array([len(s) for s in sequences])
        padded = np.zeros((len(sequences), lengths.max()), dtype=np.int64)  # 0 is [PAD]
        for row, seq in enumerate(sequences):
            padded[row, : len(seq)] = seq
        x_all, y_all = torch.from_numpy(vectors).to(device), torch.from_numpy(padded).to(device)
        opt = torch.optim.AdamW(decoder.parameters(), lr=self.learning_rate, weight_decay=0.01, fused=True)
        gen = torch.Generator().manual_seed(self.seed)
        planned = self.epochs * math.ceil(len(sequences) / self.batch_size)
        warmup = max(1, min(200, planned // 20))
        started, step = time.perf_counter(), 0
        decoder.train()
        for epoch in range(self.epochs):
            total, count = 0.0, 0
            for rows in self._batches(lengths, gen):
                by_steps, by_time = step / planned, (time.perf_counter() - started) / self.train_seconds
                # The schedule follows the steps, so that a fit is reproducible for a seed; it follows
                # the clock only once the time budget is clearly the tighter limit, to still end low.
                progress = by_time if by_time > by_steps + 0.05 else by_steps
                if progress >= 1:
                    break
                for group in opt.param_groups:
                    group["lr"] = self.learning_rate * min((step + 1) / warmup, 1 - progress)
                idx = torch.from_numpy(rows).to(device)
                seq = y_all[idx, : lengths[rows].max()]
                with _autocast(device):
                    logits, _ = decoder(x_all[idx], seq[:, :-1])
                # The output at [CLS] predicts the first wordpiece, and so on; [PAD] targets are ignored.
                loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                         seq[:, 1:].reshape(-1), ignore_index=0)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
                opt.step()
                step, total, count = step + 1, total + loss.item(), count + 1
            log.info("generative_inversion epoch %d: loss %.3f over %d steps, %.0f s", epoch + 1,
                     total / max(count, 1), count, time.perf_counter() - started)
            if step >= planned or time.perf_counter() - started >= self.train_seconds:
                break
        per_epoch = math.ceil(len(sequences) / self.batch_size)
        if step < per_epoch:   # an attacker this undertrained would understate the leak: no score
            raise ProbeError(f"generative_inversion: the time budget (train_seconds {self.train_seconds:g}) ran out "
                             f"after {step} of the {per_epoch} steps of one epoch; raise train_seconds")
        if step < planned:
            log.warning("generative_inversion: time budget of %.0f s reached after %d of %d steps; this fit "
                        "depends on the machine's load (raise train_seconds for reproducible scores)",
                        self.train_seconds, step, planned)

    # -- generation ------------------------------------------------------------------------
    def generate(self, vectors: np.ndarray, batch: int = 64) -> list[list[str]]:
        """Beam search: per vector, its `beam_size` candidate texts, best first."""
        if not hasattr(self, "model_"):
            raise ProbeError("generative_inversion.generate called before fit")
        import torch

        out: list[list[str]] = []
        with torch.inference_mode(), _cpu_kernels(self.device_), _autocast(self.device_):
            for start in range(0, len(vectors), batch):
                x = torch.from_numpy(np.asarray(vectors[start : start + batch], np.float32)).to(self.device_)
                out += self._beam_search(x)
        return out

    def _beam_search(self, x) -> list[list[str]]:
        import torch

        n, k, decoder = len(x), self.beam_size, self.model_
        cls, sep = 1, 2  # local ids: [PAD], [CLS], [SEP], [UNK] come first
        logits, caches = decoder(x, torch.full((n, 1), cls, device=x.device))
        caches = [(a.repeat_interleave(k, 0), b.repeat_interleave(k, 0)) for a, b in caches]
        scores = torch.full((n, k), -math.inf, device=x.device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        tokens = torch.zeros((n * k, 0), dtype=torch.long, device=x.device)
        done = torch.zeros(n * k, dtype=torch.bool, device=x.device)
        lengths = torch.zeros(n * k, device=x.device)
        logits = logits[:, -1].repeat_interleave(k, 0)
        position = self.prefix_tokens + 1
        for _ in range(self.max_tokens):
            logp = torch.log_softmax(logits.float(), -1)
            logp[:, [0, cls, 3]] = -math.inf  # never write [PAD], [CLS] or [UNK]
            logp[done] = -math.inf
            logp[done, 0] = 0.0  # finished beams only extend with [PAD], at no cost
            vocab = logp.shape[-1]
            top, flat = (scores.view(-1, 1) + logp).view(n, k * vocab).topk(k, -1)
            origin = (flat // vocab + torch.arange(n, device=x.device).view(-1, 1) * k).view(-1)
            token = (flat % vocab).view(-1)
            tokens = torch.cat([tokens[origin], token.view(-1, 1)], 1)
            done, lengths = done[origin], lengths[origin] + (~done[origin]).float()
            done = done | (token == sep)
            scores = top
            if bool(done.all()):
                break
            caches = [(a[origin], b[origin]) for a, b in caches]
            logits, caches = decoder(None, token.view(-1, 1), caches, start=position)
            logits = logits[:, -1]
            position += 1
        # Rank by mean log-probability per token: the sum would favour short texts.
        ranked = (scores.view(-1) / lengths.clamp(min=1)).view(n, k).argsort(-1, descending=True)
        texts = self._decode(tokens.cpu().numpy())
        return [[texts[i * k + j] for j in ranked[i].tolist()] for i in range(n)]

    def _decode(self, local_ids: np.ndarray) -> list[str]:
        texts = []
        for row in local_ids:
            end = np.flatnonzero(row == 2)  # [SEP] ends the text
            ids = [int(self.vocabulary_[t]) for t in row[: end[0] if len(end) else len(row)] if t > 3]
            texts.append(self.tokenizer_.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))
        return texts

    def invert(self, targets: np.ndarray, correction_steps: int | None = None) -> list[str]:
        """One text per target vector: the beam candidate whose re-embedding is closest to it, then
        `correction_steps` rounds of vec2text-style correction (Morris et al. 2023) where the
        pipeline is callable: the current hypothesis h is re-embedded, the decoder is conditioned on
        target + alpha * (target - embed(h)) (the vector pushed past the hypothesis' error), and of
        the new beam candidates and h the one whose re-embedding is closest to the target is kept.
        Oracle queries: beam_size per target for the reranking and per correction step."""
        targets = np.asarray(targets, np.float32)
        # getattr: a probe pickled (model cache) before correction existed has no such attribute
        steps = getattr(self, "correction_steps", 0) if correction_steps is None else correction_steps
        beams = self.generate(targets)
        if self.embed_ is None or not (self.rerank and self.beam_size > 1 or steps):
            return [cands[0] for cands in beams]
        k = self.beam_size
        sims = _cosine(self.embed_([c for cands in beams for c in cands]), np.repeat(targets, k, 0)).reshape(-1, k)
        best = sims.argmax(1) if self.rerank else np.zeros(len(targets), dtype=int)
        outputs = [cands[j] for cands, j in zip(beams, best, strict=True)]
        best_sim = sims[np.arange(len(targets)), best]
        for _ in range(steps):
            # The hypothesis' embedding, fresh: with a noisy pipeline, its error is measured anew.
            current = np.asarray(self.embed_(outputs), np.float32)
            shifted = targets + self.correction_alpha * (targets - current)
            beams = self.generate(shifted)
            sims = _cosine(self.embed_([c for cands in beams for c in cands]), np.repeat(targets, k, 0)).reshape(-1, k)
            j = sims.argmax(1)
            better = sims[np.arange(len(targets)), j] > best_sim
            outputs = [cands[jj] if b else out for cands, jj, b, out in zip(beams, j, better, outputs, strict=True)]
            best_sim = np.where(better, sims[np.arange(len(targets)), j], best_sim)
        return outputs

    # -- score -----------------------------------------------------------------------------
    def score(self, sample: Sample) -> list[Score]:
        if not hasattr(self, "model_"):
            raise ProbeError("generative_inversion.score called before fit")
        if sample.texts is None:
            raise ProbeError(
                "generative_inversion needs the sample's texts to compare its outputs with; "
                "set source.columns.text for this deployment"
            )
        if len(sample) == 0:
            raise ProbeError("generative_inversion: the sample has no rows to invert")
        rng = np.random.default_rng(self.seed)
        rows = np.sort(rng.choice(len(sample), size=min(self.max_targets, len(sample)), replace=False))
        targets = np.asarray(sample.vectors[rows], dtype=np.float32)
        truths = [sample.texts[i] for i in rows]
        started = time.perf_counter()
        outputs = self.invert(targets)
        log.info("generative_inversion: %d targets decoded in %.0f s", len(rows), time.perf_counter() - started)
        n = len(rows)
        scores = [Score(self.name, "bleu", *_bleu_with_ci(outputs, truths, self.seed, self.bootstrap_resamples), n)]

        stop = _stop_words()
        f1 = [set_prf(_output_words(out, stop), actual)[2] for out, truth in zip(outputs, truths, strict=True)
              if (actual := content_words(truth, stop))]  # as in bow_inversion: texts with a content word
        if f1:
            scores.append(Score(self.name, "token_f1", *mean_with_ci(np.asarray(f1), self.seed + 1,
                                                                      n_resamples=self.bootstrap_resamples), len(f1)))
        exact = sum(normalize(o) == normalize(t) for o, t in zip(outputs, truths, strict=True))
        scores.append(Score(self.name, "exact_match", *proportion_with_ci(int(exact), n), n))
        if self.embed_ is not None:
            # A fresh embedding of the chosen outputs: reusing the reranking one would favour lucky noise.
            cosine = _cosine(self.embed_(outputs), targets)
            scores.append(Score(self.name, "cosine", *mean_with_ci(cosine, self.seed + 2,
                                                                    n_resamples=self.bootstrap_resamples), n))
        if sample.secrets is not None:
            recovered = []
            for out, i in zip(outputs, rows, strict=True):
                secret = {w for value in sample.secrets[i].values() for w in content_words(value, stop)}
                secret -= self.common_words_
                if secret:
                    recovered.append(len(secret & _output_words(out, stop)) / len(secret))
            if recovered:
                value = mean_with_ci(np.asarray(recovered), self.seed + 3, n_resamples=self.bootstrap_resamples)
                scores.append(Score(self.name, "secret_recovery", *value, len(recovered)))
        return scores


def _output_words(text: str, stop: frozenset[str]) -> set[str]:
    """Content words of a decoded output; wordpiece decoding writes "crohn ' s" for "crohn's"."""
    return content_words(_SPACED_APOSTROPHE.sub("'", text), stop)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _bleu_with_ci(outputs: list[str], truths: list[str], seed: int, n_resamples: int) -> tuple[float, float, float]:
    """Corpus BLEU (sacrebleu, 0-100) of normalised outputs and its bootstrap interval over targets.

    Per-text n-gram counts are extracted once; a resample sums them, which is what corpus BLEU does.
    """
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="none", effective_order=True, force=True)  # counts do not depend on these
    stats = []
    for out, truth in zip(outputs, truths, strict=True):
        s = bleu.sentence_score(normalize(out), [normalize(truth)])
        stats.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    stats = np.asarray(stats, dtype=np.int64)
    order = bleu.max_ngram_order

    def corpus(rows: np.ndarray) -> float:
        total = stats[rows].sum(0)
        return BLEU.compute_bleu(total[2 : 2 + order].tolist(), total[2 + order :].tolist(), int(total[0]),
                                 int(total[1]), smooth_method="exp").score

    return statistic_with_ci(corpus, len(outputs), seed=seed, n_resamples=n_resamples)
