"""The decoder behind generative inversion: a small causal transformer that writes a text after a
vector, its training loop and its beam search.

Not a probe: audits.probes.generative_inversion decides what it is trained on and scores what it
writes. Sized for CPUs: attention keeps a key/value cache during beam search, training stops at a
wall-clock budget, and torch is imported on first use so that importing the probes stays cheap.
Token ids here are the probe's local ones: [PAD], [CLS], [SEP], [UNK] first (0 to 3).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

from audits.errors import ProbeError
from audits.probes.bow_inversion import flush_denormals

log = logging.getLogger(__name__)

PAD, CLS, SEP, UNK = 0, 1, 2, 3


@contextmanager
def cpu_kernels(device) -> Iterator[None]:
    """On CPU: denormals flushed, and the math attention kernel (the flash kernel's backward is slower
    at these short lengths)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if device.type != "cpu":
        yield
        return
    with flush_denormals(), sdpa_kernel(SDPBackend.MATH):
        yield


def autocast(device):
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
def decoder_class() -> Any:
    """The decoder's torch module class, defined on first use so that importing the probe stays cheap."""
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


def _batches(lengths: np.ndarray, batch_size: int, gen) -> list[np.ndarray]:
    """Shuffled batches of texts of similar length (less padding), in shuffled order."""
    import torch

    order = torch.randperm(len(lengths), generator=gen).numpy()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def train(decoder, vectors: np.ndarray, sequences: list[list[int]], device, *, epochs: int, batch_size: int,
          learning_rate: float, train_seconds: float, seed: int) -> None:
    """Teacher forcing with AdamW; the learning rate warms up, then decays linearly to zero over the
    planned steps or the time budget, whichever runs out first."""
    import torch

    lengths = np.array([len(s) for s in sequences])
    padded = np.zeros((len(sequences), lengths.max()), dtype=np.int64)  # 0 is [PAD]
    for row, seq in enumerate(sequences):
        padded[row, : len(seq)] = seq
    x_all, y_all = torch.from_numpy(vectors).to(device), torch.from_numpy(padded).to(device)
    opt = torch.optim.AdamW(decoder.parameters(), lr=learning_rate, weight_decay=0.01, fused=True)
    gen = torch.Generator().manual_seed(seed)
    planned = epochs * math.ceil(len(sequences) / batch_size)
    warmup = max(1, min(200, planned // 20))
    started, step = time.perf_counter(), 0
    decoder.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for rows in _batches(lengths, batch_size, gen):
            by_steps, by_time = step / planned, (time.perf_counter() - started) / train_seconds
            # The schedule follows the steps, so that a fit is reproducible for a seed; it follows
            # the clock only once the time budget is clearly the tighter limit, to still end low.
            progress = by_time if by_time > by_steps + 0.05 else by_steps
            if progress >= 1:
                break
            for group in opt.param_groups:
                group["lr"] = learning_rate * min((step + 1) / warmup, 1 - progress)
            idx = torch.from_numpy(rows).to(device)
            batch = y_all[idx, : lengths[rows].max()]
            with autocast(device):
                logits, _ = decoder(x_all[idx], batch[:, :-1])
            # The output at [CLS] predicts the first wordpiece, and so on; [PAD] targets are ignored.
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                     batch[:, 1:].reshape(-1), ignore_index=PAD)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            opt.step()
            step, total, count = step + 1, total + loss.item(), count + 1
        log.info("generative_inversion epoch %d: loss %.3f over %d steps, %.0f s", epoch + 1,
                 total / max(count, 1), count, time.perf_counter() - started)
        if step >= planned or time.perf_counter() - started >= train_seconds:
            break
    per_epoch = math.ceil(len(sequences) / batch_size)
    if step < per_epoch:   # an attacker this undertrained would understate the leak: no score
        raise ProbeError(f"generative_inversion: the time budget (train_seconds {train_seconds:g}) ran out "
                         f"after {step} of the {per_epoch} steps of one epoch; raise train_seconds")
    if step < planned:
        log.warning("generative_inversion: time budget of %.0f s reached after %d of %d steps; this fit "
                    "depends on the machine's load (raise train_seconds for reproducible scores)",
                    train_seconds, step, planned)


def beam_search(decoder, x, *, beam_size: int, prefix_tokens: int,
                max_tokens: int) -> tuple[np.ndarray, list[list[int]]]:
    """The `beam_size` beams of each vector in `x`: their local token ids (row i * beam_size + j is
    beam j of vector i) and, per vector, its beams best first."""
    import torch

    n, k = len(x), beam_size
    logits, caches = decoder(x, torch.full((n, 1), CLS, device=x.device))
    caches = [(a.repeat_interleave(k, 0), b.repeat_interleave(k, 0)) for a, b in caches]
    scores = torch.full((n, k), -math.inf, device=x.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    tokens = torch.zeros((n * k, 0), dtype=torch.long, device=x.device)
    done = torch.zeros(n * k, dtype=torch.bool, device=x.device)
    lengths = torch.zeros(n * k, device=x.device)
    logits = logits[:, -1].repeat_interleave(k, 0)
    position = prefix_tokens + 1
    for _ in range(max_tokens):
        logp = torch.log_softmax(logits.float(), -1)
        logp[:, [PAD, CLS, UNK]] = -math.inf  # never write [PAD], [CLS] or [UNK]
        logp[done] = -math.inf
        logp[done, PAD] = 0.0  # finished beams only extend with [PAD], at no cost
        vocab = logp.shape[-1]
        top, flat = (scores.view(-1, 1) + logp).view(n, k * vocab).topk(k, -1)
        origin = (flat // vocab + torch.arange(n, device=x.device).view(-1, 1) * k).view(-1)
        token = (flat % vocab).view(-1)
        tokens = torch.cat([tokens[origin], token.view(-1, 1)], 1)
        done, lengths = done[origin], lengths[origin] + (~done[origin]).float()
        done = done | (token == SEP)
        scores = top
        if bool(done.all()):
            break
        caches = [(a[origin], b[origin]) for a, b in caches]
        logits, caches = decoder(None, token.view(-1, 1), caches, start=position)
        logits = logits[:, -1]
        position += 1
    # Rank by mean log-probability per token: the sum would favour short texts.
    ranked = (scores.view(-1) / lengths.clamp(min=1)).view(n, k).argsort(-1, descending=True)
    return tokens.cpu().numpy(), ranked.tolist()
