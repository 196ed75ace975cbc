"""Generative inversion (GEIA, Li et al. 2023; vec2text, Morris et al. 2023): the vector is decoded back to text.

A small causal transformer learns, from the auxiliary corpus embedded through the deployment's
own pipeline, to write a text given its vector: an MLP turns the vector into a few prefix
embeddings, and the decoder generates wordpieces after them. Scored on the sample, beam search
proposes texts; where the pipeline is reachable as an oracle, every beam candidate is
re-embedded and the one closest to the target vector wins (vec2text's idea, without its
iterative corrector). Metrics: corpus BLEU, content-word F1, exact match, cosine of the
re-embedded output to the target, and the share of secret words written out.

Everything is sized for CPUs: the softmax covers only the wordpieces of the auxiliary corpus,
attention keeps a key/value cache during beam search, and training stops at a wall-clock budget
(the decoder, its training and its beam search: audits.probes.text_decoder).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np

from audits.encoders import BUNDLED_MODEL, bundled_model_dir
from audits.errors import ProbeError
from audits.metrics import mean_with_ci, proportion_with_ci, set_prf, statistic_with_ci
from audits.params import Bool, Int, Real, parameters
from audits.probes.base import Auxiliary, Embed
from audits.probes.text_decoder import SEP, UNK, autocast, beam_search, cpu_kernels, decoder_class, train
from audits.probes.words import content_words, stop_words
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

    name: ClassVar[str] = "generative_inversion"
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {
        "bleu": (0, 100), "token_f1": (0, 1), "exact_match": (0, 1), "cosine": (-1, 1), "secret_recovery": (0, 1)}
    needs = ("texts",)
    common_word_share = 0.05  # words in more than this share of aux texts identify nobody (as in bow_inversion)
    min_texts = 50

    @parameters
    def __init__(self, seed: int = 0, decoder_init: str = BUNDLED_MODEL, layers: Annotated[int, Int(1, 48)] = 3,
                 prefix_tokens: Annotated[int, Int(1, 64)] = 4, max_tokens: Annotated[int, Int(2, 512)] = 48,
                 epochs: Annotated[int, Int(1, 10_000)] = 15,
                 train_seconds: Annotated[float, Real(above=0, high=86_400)] = 570.0,
                 learning_rate: Annotated[float, Real(above=0, high=10)] = 1e-3,
                 batch_size: Annotated[int, Int(1, 4096)] = 32, dropout: Annotated[float, Real(0, below=1)] = 0.0,
                 beam_size: Annotated[int, Int(1, 64)] = 4, rerank: Bool = True,
                 max_targets: Annotated[int, Int(1, 100_000)] = 200,
                 bootstrap_resamples: Annotated[int, Int(100, 100_000)] = 1000,
                 correction_steps: Annotated[int, Int(0, 100)] = 1,
                 correction_alpha: Annotated[float, Real(above=0, high=4)] = 1.0) -> None:
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
        decoder = decoder_class()(token_table[torch.from_numpy(vocab)].clone(), position_table[:span].clone(),
                             vectors.shape[1], self.prefix_tokens, self.layers, self.dropout).to(device)
        with cpu_kernels(device):
            train(decoder, vectors, sequences, device, epochs=self.epochs, batch_size=self.batch_size,
                  learning_rate=self.learning_rate, train_seconds=self.train_seconds, seed=self.seed)
        decoder.eval()
        self.model_, self.device_, self.shape_ = decoder, device, (len(vocab), span, vectors.shape[1])
        self.embed_: Embed | None = aux.embed

        stop = stop_words()
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
            decoder = decoder_class()(torch.zeros(vocab, width), torch.zeros(span, width), dim_in, self.prefix_tokens,
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

    # -- generation ------------------------------------------------------------------------
    def generate(self, vectors: np.ndarray, batch: int = 64) -> list[list[str]]:
        """Beam search: per vector, its `beam_size` candidate texts, best first."""
        if not hasattr(self, "model_"):
            raise ProbeError("generative_inversion.generate called before fit")
        import torch

        out: list[list[str]] = []
        k = self.beam_size
        with torch.inference_mode(), cpu_kernels(self.device_), autocast(self.device_):
            for start in range(0, len(vectors), batch):
                x = torch.from_numpy(np.asarray(vectors[start : start + batch], np.float32)).to(self.device_)
                tokens, ranked = beam_search(self.model_, x, beam_size=k, prefix_tokens=self.prefix_tokens,
                                             max_tokens=self.max_tokens)
                texts = self._decode(tokens)
                out += [[texts[i * k + j] for j in order] for i, order in enumerate(ranked)]
        return out

    def _decode(self, local_ids: np.ndarray) -> list[str]:
        texts = []
        for row in local_ids:
            end = np.flatnonzero(row == SEP)  # [SEP] ends the text
            ids = [int(self.vocabulary_[t]) for t in row[: end[0] if len(end) else len(row)] if t > UNK]
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

        stop = stop_words()
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
    per_text = []
    for out, truth in zip(outputs, truths, strict=True):
        s = bleu.sentence_score(normalize(out), [normalize(truth)])
        per_text.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    stats = np.asarray(per_text, dtype=np.int64)
    order = bleu.max_ngram_order

    def corpus(rows: np.ndarray) -> float:
        total = stats[rows].sum(0)
        return BLEU.compute_bleu(total[2 : 2 + order].tolist(), total[2 + order :].tolist(), int(total[0]),
                                 int(total[1]), smooth_method="exp").score

    return statistic_with_ci(corpus, len(outputs), seed=seed, n_resamples=n_resamples)
