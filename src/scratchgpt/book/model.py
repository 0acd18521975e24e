"""The GPT model of chapter 4: token and position embeddings, pre-norm transformer blocks of
causal multi-head attention and a GELU feed-forward with shortcut connections, a final
LayerNorm and the output head.

Built for speed on the same weights as the book: one fused query/key/value projection,
``scaled_dot_product_attention``, PyTorch's native LayerNorm and tanh-GELU, and an optional
KV cache for generation. Creation order and initialisers follow the book's code exactly, so
``torch.manual_seed(123); GPTModel(PRESETS["book-124m"])`` holds the same numbers as the book's
model built after the same seed.

Model directories (config.json + model.safetensors) are :mod:`scratchgpt.formats.modeldir`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.book.settings import GPTConfig

TIED_EMBEDDING_STD = 0.02


_GPT2 = dict(vocab_size=50257, context_length=1024, drop_rate=0.0, qkv_bias=True, tie_weights=True)
PRESETS: dict[str, GPTConfig] = {
    # The book's GPT_CONFIG_124M (chapter 4), trained from scratch in chapter 5.
    "book-124m": GPTConfig(),
    # OpenAI's GPT-2 sizes, as loaded in chapter 5 (biases in the qkv projection, tied head).
    "gpt2-small": GPTConfig(emb_dim=768, n_layers=12, n_heads=12, **_GPT2),
    "gpt2-medium": GPTConfig(emb_dim=1024, n_layers=24, n_heads=16, **_GPT2),
    "gpt2-large": GPTConfig(emb_dim=1280, n_layers=36, n_heads=20, **_GPT2),
    "gpt2-xl": GPTConfig(emb_dim=1600, n_layers=48, n_heads=25, **_GPT2),
}


# ---------------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to ``max_len``."""

    def __init__(self, config: GPTConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype):
        shape = (config.n_layers, batch, config.n_heads, max_len, config.head_dim)
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values of ``layer``; return all keys/values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} requested")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def reset(self) -> None:
        self.length = 0


# ---------------------------------------------------------------------------------------------
# Modules


class MultiHeadAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        d = config.emb_dim
        self.layer = layer
        self.n_heads = config.n_heads
        self.dropout = config.drop_rate
        # One (d → 3d) projection for query, key and value, initialised exactly like the book's
        # three separate nn.Linear(d, d): same calls, same order, same random numbers.
        device = torch.empty(0).device  # honours a `with torch.device(...)` context
        self.qkv = nn.utils.skip_init(nn.Linear, d, 3 * d, bias=config.qkv_bias, device=device)
        with torch.no_grad():
            for i in range(3):
                part = nn.Linear(d, d, bias=config.qkv_bias)
                self.qkv.weight[i * d : (i + 1) * d].copy_(part.weight)
                if config.qkv_bias:
                    self.qkv.bias[i * d : (i + 1) * d].copy_(part.bias)
        self.out_proj = nn.Linear(d, d)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(self.layer, k, v)
        causal = attn_mask is None and t > 1
        if causal and past:  # queries after a cached prefix: the mask is not square
            attn_mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.emb_dim, 4 * config.emb_dim)
        self.proj = nn.Linear(4 * config.emb_dim, config.emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.att = MultiHeadAttention(config, layer)
        self.ff = FeedForward(config)
        self.norm1 = nn.LayerNorm(config.emb_dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(config.emb_dim, eps=1e-5)
        self.drop_shortcut = nn.Dropout(config.drop_rate)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), cache, attn_mask))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
        self.drop_emb = nn.Dropout(config.drop_rate)
        self.trf_blocks = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.emb_dim, eps=1e-5)
        if config.n_classes:  # chapter 6's classification head
            self.out_head = nn.Linear(config.emb_dim, config.n_classes)
        else:
            self.out_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        if config.tie_weights:
            # An N(0, 1) table used as the output head would give logits ~sqrt(emb_dim) too
            # large; tied models start both embeddings at GPT-2's scale instead (the random
            # numbers drawn, and so every other initial weight, stay those of the book).
            with torch.no_grad():
                self.tok_emb.weight.mul_(TIED_EMBEDDING_STD)
                self.pos_emb.weight.mul_(TIED_EMBEDDING_STD)
            self.out_head.weight = self.tok_emb.weight

    def forward(
        self,
        idx: torch.Tensor,
        *,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        last_only: bool = False,
        select: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (batch, tokens, vocab or n_classes) for token ids (batch, tokens); with
        ``last_only`` just those of the last position (batch, 1, ...), sparing the output head the
        other positions (what generation needs); with a boolean ``select`` (batch, tokens) those of
        the selected positions, row by row (selected, vocab): what scoring some tokens needs.

        With a ``cache``, ``idx`` continues the cached tokens and positions continue from there.
        ``positions`` (batch, tokens) and a boolean ``attn_mask`` (batch, 1, tokens, keys) serve
        batches of left-padded prompts.
        """
        b, t = idx.shape
        past = cache.length if cache is not None else 0
        if positions is None:
            if past + t > self.config.context_length:
                raise ValueError(
                    f"{past + t} tokens exceed the context length {self.config.context_length}; "
                    "crop the input to the last context_length tokens"
                )
            positions = torch.arange(past, past + t, device=idx.device)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(positions))
        for block in self.trf_blocks:
            x = block(x, cache, attn_mask)
        if cache is not None:
            cache.length += t
        if last_only:
            x = x[:, -1:]
        elif select is not None:
            x = x[select]
        return self.out_head(self.final_norm(x))

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Distinct parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def attention_weights(model: GPTModel, idx: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """The causal attention weights (heads, tokens, tokens) of one layer for one sequence, as
    the book's explicit softmax(QKᵀ/√d) computes them (SDPA never materialises them)."""
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise ValueError(f"expected token ids of shape (1, tokens), got {tuple(idx.shape)}")
    model.eval()
    t = idx.shape[1]
    x = model.drop_emb(model.tok_emb(idx) + model.pos_emb(torch.arange(t, device=idx.device)))
    blocks = list(model.trf_blocks)
    target = blocks[layer]
    for block in blocks:
        if block is target:
            break
        x = block(x)
    att = target.att
    h = target.norm1(x)
    q, k, _ = att.qkv(h).view(1, t, 3, att.n_heads, -1).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-2, -1))[0] / q.shape[-1] ** 0.5
    mask = torch.ones(t, t, dtype=torch.bool, device=idx.device).triu(1)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


def model_from_state(config: GPTConfig, state: dict[str, torch.Tensor]) -> GPTModel:
    """Our model holding exactly ``state`` (out_head.weight may be left out when tied)."""
    with torch.device("meta"):
        model = GPTModel(config)
    if config.tie_weights:
        state = {**state, "out_head.weight": state["tok_emb.weight"]}
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_weights:
        model.out_head.weight = model.tok_emb.weight
    return model.eval()
