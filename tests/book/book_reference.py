"""The book's model and training loop written plainly, as chapters 4 and 5 do: separate
query/key/value projections, an explicit causal mask, hand-written LayerNorm and tanh-GELU
modules, ``torch.optim.AdamW`` with default settings.

Two uses: the tests check scratchgpt against it (built after the same seed it holds the same
weights and gives the same logits; the same loop sees the same batches and losses), and the
benchmarks in bench/ measure scratchgpt's speed against it."""

import itertools
import math

import torch
from torch import nn


class PlainLayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


def tanh_gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


class PlainAttention(nn.Module):
    def __init__(self, d: int, heads: int, context: int, dropout: float, bias: bool):
        super().__init__()
        self.heads = heads
        self.W_query = nn.Linear(d, d, bias=bias)
        self.W_key = nn.Linear(d, d, bias=bias)
        self.W_value = nn.Linear(d, d, bias=bias)
        self.out_proj = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context, context), diagonal=1))

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads

        def split(z):
            return z.view(b, t, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = q @ k.transpose(2, 3)
        scores = scores.masked_fill(self.mask.bool()[:t, :t], -torch.inf)
        weights = self.dropout(torch.softmax(scores / hd**0.5, dim=-1))
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, t, d))


class PlainBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.emb_dim
        self.att = PlainAttention(d, cfg.n_heads, cfg.context_length, cfg.drop_rate, cfg.qkv_bias)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.norm1 = PlainLayerNorm(d)
        self.norm2 = PlainLayerNorm(d)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x):
        x = x + self.drop(self.att(self.norm1(x)))
        return x + self.drop(self.fc2(tanh_gelu(self.fc1(self.norm2(x)))))


class PlainGPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.Sequential(*[PlainBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = PlainLayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(pos))
        return self.out_head(self.final_norm(self.blocks(x)))


def calc_loss_loader(loader, model, num_batches):
    """Chapter 5's loss over the first ``num_batches`` batches of a fresh pass over ``loader``.
    (The book's loop also reads the batch after the last before it breaks; that reads samples
    but draws no random numbers, so it is left out here.)"""
    total, n = 0.0, min(num_batches, len(loader))
    for x, y in itertools.islice(loader, n):
        total += torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    return total / n


def book_training_loop(model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter):
    """Chapter 5's train_model_simple (without the text samples): returns (train, val) losses."""
    train_losses, val_losses, global_step = [], [], -1
    for _ in range(num_epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()
            optimizer.step()
            global_step += 1
            if global_step % eval_freq == 0:
                model.eval()
                with torch.no_grad():
                    train_losses.append(calc_loss_loader(train_loader, model, eval_iter))
                    val_losses.append(calc_loss_loader(val_loader, model, eval_iter))
                model.train()
    return train_losses, val_losses
