"""Chapter 7's bonus material: preference tuning with Direct Preference Optimization (DPO).

- **Data.** instruction-data-with-preference.json holds chapter 7's 1,100 instructions, each
  with a ``chosen`` and a ``rejected`` response. It is split as chapter 7 splits its file
  (:func:`scratchgpt.book.instruct.split_entries`), so the test entries are chapter 7's.
- **Collate.** The book's: the prompt + chosen and the prompt + rejected ids, padded with 50256
  to one common length (the longer of the two longest, plus one), a mask that selects the
  response tokens (padding off, and with ``mask_prompt`` the prompt and the two tokens after
  it, ``"\\n\\n###"``), truncated to ``allowed_max_length``.
- **Loss.** Each sequence's log-probability is the mean over its selected tokens
  (:func:`sequence_logprobs`; :func:`response_logprobs` computes the same with the output head
  applied to the selected positions only, most of the cost at GPT-2's vocabulary). With π the
  policy and π_ref the frozen reference (both start as the instruction model), the loss of a pair is
  ``-log σ(β · ((log π(c) - log π(r)) - (log π_ref(c) - log π_ref(r))))``; the rewards are
  ``log π(c) - log π_ref(c)`` and ``log π(r) - log π_ref(r)``, unscaled by β, as the book logs
  them. Before the first update the policy is the reference: the loss is ln 2 and every reward 0.
- **Measures.** :class:`Objective` gives the loop its loss and, per evaluation batch, the mean
  loss, chosen and rejected rewards and reward accuracy (the share of pairs whose chosen reward
  beats the rejected one; the book's evaluate_dpo_loss_loader averages the first three the same
  way, per batch). The margin is chosen minus rejected.
- **A frozen reference, scored once.** The reference never changes, so :meth:`Objective.remember`
  scores every training and validation pair once, and each step and evaluation reads the values
  back by the pair's key (:class:`Keyed`, the batch's fifth tensor) instead of running the
  reference again. They equal the uncached ones up to float noise (other batch shapes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from scratchgpt.book.instruct import KEYS, format_input
from scratchgpt.book.tokenizer import GPT2_EOT_ID

PREFERENCE_KEYS = (*KEYS, "chosen", "rejected")
# What an evaluation measures on each batch (the loop logs them as train_<name>, val_<name>).
MEASURES = ("loss", "chosen_reward", "rejected_reward", "reward_accuracy")


def response_text(prompt: str, response: str) -> str:
    """The book's full text of one side of a pair: the prompt, then the response."""
    return f"{prompt}\n\n### Response:\n{response}"


class PreferenceDataset(Dataset):
    """Each entry as (prompt ids, prompt + chosen ids, prompt + rejected ids)."""

    def __init__(self, entries: Sequence[dict[str, str]], tokenizer: Any):
        self.entries = list(entries)
        self.items = []
        for entry in self.entries:
            prompt = format_input(entry)
            self.items.append(
                (
                    tokenizer.encode(prompt, allow_special=False),
                    tokenizer.encode(response_text(prompt, entry["chosen"]), allow_special=False),
                    tokenizer.encode(response_text(prompt, entry["rejected"]), allow_special=False),
                )
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], list[int], list[int]]:
        return self.items[index]


@dataclasses.dataclass(frozen=True)
class Collate:
    """The book's DPO custom_collate_fn: a batch of (chosen, rejected, chosen mask, rejected mask)."""

    pad_id: int = GPT2_EOT_ID
    allowed_max_length: int | None = None
    mask_prompt: bool = True

    def mask(self, n_prompt: int, n_ids: int, length: int) -> torch.Tensor:
        """Which of ``length`` positions hold a response token of a sequence of ``n_ids`` ids."""
        selected = torch.zeros(length, dtype=torch.bool)
        selected[:n_ids] = True
        if self.mask_prompt:
            selected[: n_prompt + 2] = False  # the prompt, then "\n\n###" (the book's + 2)
        return selected

    def __call__(self, batch: Sequence[tuple[Any, ...]]) -> tuple[torch.Tensor, ...]:
        """Items (prompt, chosen, rejected) or, from :class:`Keyed`, (prompt, chosen, rejected,
        key): then the keys come fifth."""
        length = max(max(len(item[1]), len(item[2])) + 1 for item in batch)
        out: list[list[torch.Tensor]] = [[], [], [], []]
        for prompt, *sides in (item[:3] for item in batch):
            for k, ids in enumerate(sides):
                out[k].append(torch.tensor(ids + [self.pad_id] * (length - len(ids))))
                out[2 + k].append(self.mask(len(prompt), len(ids), length))
        stacked = [torch.stack(t) for t in out]
        if self.allowed_max_length is not None:
            stacked = [t[:, : self.allowed_max_length] for t in stacked]
        if len(batch[0]) > 3:
            stacked.append(torch.tensor([item[3] for item in batch], dtype=torch.long))
        return tuple(stacked)

    def has_response(self, item: tuple[list[int], list[int], list[int]]) -> bool:
        """Whether both sides of a pair keep a selected token after truncation (else its mean
        log-probability has nothing to average)."""
        prompt, *sides = item[:3]
        for ids in sides:
            length = len(ids) if self.allowed_max_length is None else min(len(ids), self.allowed_max_length)
            if not bool(self.mask(len(prompt), len(ids), length)[1:].any()):
                return False
        return True


class Keyed(Dataset):
    """The items of ``dataset``, each with its key ``first_key + index`` appended: what the
    reference values of a pair are remembered by (keys must differ across the splits)."""

    def __init__(self, dataset: Dataset, first_key: int = 0):
        self.dataset, self.first_key = dataset, first_key

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (*self.dataset[index], self.first_key + index)


def sequence_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The book's compute_logprobs: per sequence, the mean log-probability the model gives each
    next token where ``mask`` selects it (positions shifted by one, as targets are)."""
    labels, selected = ids[:, 1:], mask[:, 1:]
    logp = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    token_logp = torch.gather(logp, -1, labels.unsqueeze(-1)).squeeze(-1)
    return (token_logp * selected).sum(-1) / selected.sum(-1)


def response_logprobs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`sequence_logprobs` of ``model(ids)``, with the output head and the softmax computed
    only at the positions whose next token ``mask`` selects."""
    targets = mask[:, 1:]
    select = torch.zeros_like(mask)
    select[:, :-1] = targets
    logits = model(ids, select=select)  # (selected, vocab), row by row
    token_logp = -F.cross_entropy(logits.float(), ids[:, 1:][targets], reduction="none")
    rows = select.nonzero()[:, 0]
    sums = torch.zeros(ids.shape[0], dtype=token_logp.dtype, device=ids.device).index_add(0, rows, token_logp)
    return sums / targets.sum(-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: the DPO loss, the chosen reward and the rejected reward (detached)."""
    logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    losses = -F.logsigmoid(beta * logits)
    return losses, (policy_chosen - reference_chosen).detach(), (policy_rejected - reference_rejected).detach()


@dataclasses.dataclass
class Objective:
    """DPO against a frozen ``reference``: the loop's loss function and evaluation measure."""

    reference: torch.nn.Module
    beta: float  # how far the policy may move from the reference (params' dpo.beta; the book: 0.1)
    remembered: torch.Tensor | None = None  # (keys, 2): the reference's values of each keyed pair

    def __post_init__(self) -> None:
        self.reference.eval().requires_grad_(False)

    @staticmethod
    def logprobs(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) mean log-probabilities, from one forward pass over both sides."""
        chosen, rejected, chosen_mask, rejected_mask = batch[:4]
        ids = torch.cat([chosen, rejected])
        return response_logprobs(model, ids, torch.cat([chosen_mask, rejected_mask])).chunk(2)

    @torch.no_grad()
    def remember(self, splits: Sequence[Dataset], collate: Any, batch_size: int, device: torch.device) -> None:
        """Score every pair of ``splits`` (:class:`Keyed` datasets) with the reference once, in
        order, ``batch_size`` pairs at a time (under the caller's autocast)."""
        keys = [item[3] for split in splits for item in (split[i] for i in range(len(split)))]  # type: ignore[arg-type]
        table = torch.full((max(keys) + 1, 2), float("nan"), device=device)
        batches = [(split, start) for split in splits for start in range(0, len(split), batch_size)]  # type: ignore[arg-type]
        for split, start in tqdm(batches, desc="scoring the reference", unit="batch", leave=False, disable=None):
            batch = collate([split[i] for i in range(start, min(start + batch_size, len(split)))])  # type: ignore[arg-type]
            batch = tuple(t.to(device) for t in batch)
            table[batch[4]] = torch.stack(self.logprobs(self.reference, batch), dim=1).float()
        self.remembered = table

    def reference_logprobs(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's (chosen, rejected) values: remembered when the batch carries keys."""
        if self.remembered is not None and len(batch) > 4:
            chosen, rejected = self.remembered[batch[4]].unbind(1)
            return chosen, rejected
        with torch.no_grad():
            return self.logprobs(self.reference, batch)

    def terms(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        policy = self.logprobs(model, batch)
        return dpo_loss(*policy, *self.reference_logprobs(batch), beta=self.beta)

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.terms(model, batch)[0].mean()

    def measure(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[list[float], int]:
        """:data:`MEASURES` of one batch (means over its pairs), counted as one batch."""
        losses, chosen, rejected = self.terms(model, batch)
        values = [losses.mean(), chosen.mean(), rejected.mean(), (chosen > rejected).float().mean()]
        return [v.item() for v in values], 1
