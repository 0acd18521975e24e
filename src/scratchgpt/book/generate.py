"""Text generation: greedy decoding and sampling (temperature, top-k, top-p), stopping at an
end-of-text id, batches of prompts of different lengths, and a KV cache.

Semantics are those of the book's ``generate``: each step feeds the last ``context_length``
tokens (positions restart at 0 in the window) and picks the next token from the last logits.
With the KV cache each step feeds only the new token; once the window is full every position
shifts, so the window is recomputed, which keeps the ids identical to the uncached path.

Command line::

    scratchgpt generate --model models/pretrained --prompt "Every effort moves you"
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import torch

from scratchgpt.book.model import GPTModel, KVCache


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (ties with the k-th kept); the rest become -inf."""
    if k <= 0:
        raise ValueError(f"top_k must be >= 1, got {k}")
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``p``."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    remove_sorted = mass_before >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (batch,) from last-position logits (batch, vocab).

    temperature 0 is greedy (argmax); otherwise logits are divided by the temperature, filtered
    by top-k then top-p, and sampled.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


DECODE_ROWS = 16  # up to this many rows per step (prompts in a batch), the split product below


def _decode_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a few rows, with the weight held (in, out) by :func:`decode_layout`.

    A vector-matrix product on the CPU is bound by how fast the weight streams from memory.
    Given an (in, out) matrix, MKL splits its columns between the threads, so each core reads
    short interleaved pieces of every row; splitting the *input* dimension instead hands each
    thread one contiguous block of rows, and the partial products are added. Measured here on
    the 124M model's blocks: 16 → 20 GB/s, a cached 200-token generation 8.4 → 6.4 s.
    """
    weight, parts = layer.weight, torch.get_num_threads()
    n_in, n_out = weight.shape[1], weight.shape[0]
    rows = x.reshape(-1, n_in)
    if parts < 2 or n_in % parts or rows.shape[0] > DECODE_ROWS or weight.stride(0) != 1 or torch.is_grad_enabled():
        return torch.nn.functional.linear(x, weight, layer.bias)
    pieces = rows.view(rows.shape[0], parts, n_in // parts).transpose(0, 1)
    y = torch.bmm(pieces, weight.t().view(parts, n_in // parts, n_out)).sum(dim=0)
    if layer.bias is not None:
        y += layer.bias
    return y.view(*x.shape[:-1], n_out)


def _packed_linear(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` with the weight in oneDNN's packed layout (:func:`decode_layout`, bf16)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _onednn_packing() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


@contextlib.contextmanager
def decode_layout(model: GPTModel, enabled: bool = True) -> Iterator[None]:
    """While generating on the CPU, hold each linear layer's weight in the layout a few-row
    product reads fastest.

    A one-token decoding step multiplies a row vector by every weight matrix; streaming the
    weights from memory is the whole cost.

    - **fp32**: MKL's kernel reads an (in, out) row-major matrix up to twice as fast as
      nn.Linear's (out, in) one (measured here: GPT-2's output head 13.0 → 7.2 ms), and
      :func:`_decode_linear` then splits each product between the threads by rows. The values
      are the same; only the memory order changes, one tensor at a time, and it is restored
      afterwards (training prefers the usual order), as is each layer's ``forward``.
    - **bf16**: ATen's bf16 product reads about 18 GB/s whatever the layout; oneDNN's linear on
      a weight packed for it (a copy, held while generating) reads at the memory's speed, with
      the same values (measured here: the head 17.7 → 32.8 GB/s, the blocks' matrices twice as
      fast)."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    params = {id(m.weight): m.weight for m in layers}
    dtypes = {p.dtype for p in params.values()}
    on_cpu = all(p.device.type == "cpu" for p in params.values())
    transposed = enabled and on_cpu and dtypes == {torch.float32}
    packed = enabled and on_cpu and dtypes == {torch.bfloat16} and _onednn_packing()
    if transposed:
        for p in params.values():
            p.data = p.data.t().contiguous().t()
        for m in layers:
            m.forward = functools.partial(_decode_linear, m)
    if packed:
        for m in layers:
            weight = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), 1)
            bias = None if m.bias is None else m.bias.detach()
            m.forward = functools.partial(_packed_linear, weight, bias)
    try:
        yield
    finally:
        if transposed or packed:
            for m in layers:
                del m.forward  # back to the class's
        if transposed:
            for p in params.values():
                p.data = p.data.contiguous()


def _window_inputs(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Positions and attention mask for a window of left-padded rows (``valid`` marks real tokens).

    Positions count real tokens from 0; a query sees real keys at or before it. A padding query
    sees only itself, so no row of the mask is empty (that would make NaNs).
    """
    positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
    if bool(valid.all()):
        return positions, None
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    mask = (valid[:, None, None, :] & causal) | torch.eye(t, dtype=torch.bool, device=valid.device)
    return positions, mask


@torch.no_grad()
def stream(
    model: GPTModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (next ids, active rows) per step, for prompts of any lengths.

    A row stops after producing ``eos_id`` (the eos id itself is yielded); generation ends when
    every row has stopped or after ``max_new_tokens`` steps.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ctx = model.config.context_length
    longest = max(len(p) for p in prompts)
    # Every id of the run in one buffer, prompts right-aligned: a step writes one column, nothing
    # is concatenated; `valid` marks real tokens (left padding, and the steps after a row stopped).
    n, total = longest, longest + max_new_tokens
    tokens = torch.zeros(len(prompts), total, dtype=torch.long, device=device)
    valid = torch.zeros(len(prompts), total, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        tokens[i, longest - len(p) : longest] = torch.as_tensor(list(p), dtype=torch.long, device=device)
        valid[i, longest - len(p) : longest] = True
    ragged = any(len(p) < longest for p in prompts)  # some row has padding or has stopped
    active = torch.ones(len(prompts), dtype=torch.bool, device=device)
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(model.config, len(prompts), ctx, device, dtype)
    try:
        with decode_layout(model, enabled=use_cache):
            for _ in range(max_new_tokens):
                if cache is not None and 0 < cache.length < ctx:
                    positions = mask = None  # every row real: positions continue from the cache
                    if ragged:
                        window_valid = valid[:, n - (cache.length + 1) : n]
                        positions = (window_valid.long().sum(dim=1, keepdim=True) - 1).clamp(min=0)
                        mask = window_valid[:, None, None, :]
                    logits = model(
                        tokens[:, n - 1 : n], cache=cache, positions=positions, attn_mask=mask, last_only=True
                    )
                else:  # first step, or the window is full and every position shifts
                    if cache is not None:
                        cache.reset()
                    start = max(0, n - ctx)
                    positions, mask = _window_inputs(valid[:, start:n])
                    # With the cache, only the last position's logits are needed; without it, this is
                    # the book's loop (logits for the whole window, the last one used).
                    logits = model(
                        tokens[:, start:n],
                        cache=cache,
                        positions=positions,
                        attn_mask=mask,
                        last_only=cache is not None,
                    )
                next_ids = sample_next(logits[:, -1].float(), temperature, top_k, top_p, generator)
                yield next_ids, active.clone()
                tokens[:, n] = next_ids
                valid[:, n] = active
                n += 1
                if eos_id is not None:
                    active &= next_ids != eos_id
                    still = int(active.sum())
                    if still == 0:
                        break
                    ragged = ragged or still < len(prompts)
    finally:
        model.train(was_training)


def generate(
    model: GPTModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    **options,
) -> list[list[int]]:
    """The new ids of each prompt (up to and including ``eos_id`` when it is produced)."""
    out: list[list[int]] = [[] for _ in prompts]
    for next_ids, active in stream(model, prompts, max_new_tokens, **options):
        for row, token, on in zip(out, next_ids.tolist(), active.tolist()):
            if on:
                row.append(token)
    return out


def generate_text(model: GPTModel, tokenizer, prompt: str, max_new_tokens: int, **options) -> str:
    """Prompt plus continuation, decoded."""
    ids = tokenizer.encode(prompt)
    new = generate(model, [ids], max_new_tokens, **options)[0]
    return tokenizer.decode(ids + new)


# ---------------------------------------------------------------------------------------------
# Command line
