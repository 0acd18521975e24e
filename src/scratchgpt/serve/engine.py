"""Continuous batching: many requests decoded together, one token each per step.

A decoding step reads every weight of the model once whatever the number of rows, so rows that
share a step share that cost. Requests that arrive while others decode join the running batch
before the next step (their prompt is run alone first, the *prefill*), each with its own
position and its own rows of the KV cache; a request that finishes or is cancelled leaves the
batch at once, and its cache slot goes to the next one.

The cache holds ``max_batch`` slots of ``context_length`` positions. The active rows always
occupy slots ``0 .. n-1`` (a leaving row's slot gets the last row's cache), so each layer reads
its keys and values as a view, never a copy. Rows of different lengths attend through a mask
(a key is seen when its position is at or before the row's own).

A request decoded in a batch gets the ids it would get alone (greedy), up to float rounding:
the products of a batch round like those of one row, and the tests check the ids are equal.

Everything torch does runs in one thread, :meth:`Engine.run`; the rest of the program talks to
it through :meth:`Engine.submit` and :meth:`Request.cancel`, and hears of each token through the
request's ``emit`` callback (called from the engine's thread).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from scratchgpt.book.generate import decode_layout, sample_next
from scratchgpt.book.model import GPTModel, KVCache

log = logging.getLogger(__name__)


def _by_batch(one: Callable, packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Several sequences: oneDNN's linear on the weight packed for batches; one sequence:
    ``one``, the layer's forward in :func:`~scratchgpt.book.generate.decode_layout`."""
    if x.dim() == 3 and x.shape[0] > 1:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return one(x)


@contextlib.contextmanager
def batch_layout(model: GPTModel, rows: int) -> Iterator[None]:
    """:func:`~scratchgpt.book.generate.decode_layout` (what ``generate`` decodes one sequence
    with), plus, for fp32 weights, a copy of each weight packed for oneDNN's linear at ``rows``
    rows, used for steps of several sequences.

    MKL multiplies a few rows by a weight at a third of the arithmetic's speed; oneDNN's linear
    on a packed weight is 2-3 times faster (measured here, the 124M model's decoding step at 8
    rows: 59 → 30 ms; at one row it is 20 ms either way, so one sequence keeps generate's path
    and its ids). The packed copies cost the model's size again in memory while serving."""
    with decode_layout(model):
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        packing = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        if packing and rows > 1 and all(m.weight.dtype == torch.float32 for m in layers):
            for m in layers:
                packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), rows)
                bias = None if m.bias is None else m.bias.detach()
                m.forward = functools.partial(_by_batch, m.forward, packed, bias)
        yield  # decode_layout puts every layer's own forward back


class QueueFull(RuntimeError):
    """More requests than the batch and the waiting queue hold."""


@dataclass(eq=False)
class Request:
    """One generation: ``prompt`` ids, then up to ``max_tokens`` new ones.

    ``emit(token, reason)`` hears each new id as ``(id, None)`` and the end once as
    ``(None, reason)``: ``"stop"`` (the end-of-text id, which is not emitted), ``"length"``
    (``max_tokens`` reached), ``"cancelled"`` or ``"error: ..."``.
    """

    prompt: list[int]
    max_tokens: int
    emit: Callable[[int | None, str | None], None]
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    eos_id: int | None = None
    generated: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Leave the batch before the next step (safe from any thread)."""
        self.cancelled.set()


class SlotCache:
    """Keys and values for ``slots`` rows of ``max_len`` positions each, every row at its own
    length: the duck type of :class:`~scratchgpt.book.model.KVCache` that a decoding step with
    explicit positions and mask uses (``append`` writes one position per row)."""

    def __init__(self, model: GPTModel, slots: int, max_len: int) -> None:
        weight = next(model.parameters())
        c = model.config
        shape = (c.n_layers, slots, c.n_heads, max_len, c.head_dim)
        self.keys = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.values = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.length = 0  # the model adds each step's tokens here; rows keep their own lengths
        self.rows = 0
        self.span = 0
        self.at: torch.Tensor | None = None
        self._index: torch.Tensor | None = None

    def step(self, lengths: torch.Tensor) -> None:
        """The next step writes row ``i``'s key at position ``lengths[i]`` for rows ``0 .. n-1``."""
        self.rows = len(lengths)
        self.at = lengths
        self._index = torch.arange(self.rows, device=lengths.device)
        self.span = int(lengths.max()) + 1
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer, self._index, :, self.at] = k[:, :, 0]
        self.values[layer, self._index, :, self.at] = v[:, :, 0]
        return self.keys[layer, : self.rows, :, : self.span], self.values[layer, : self.rows, :, : self.span]

    def fill(self, slot: int, prefill: KVCache, length: int) -> None:
        """Slot ``slot`` takes the ``length`` positions a prefill of one row computed."""
        self.keys[:, slot, :, :length] = prefill.keys[:, 0, :, :length]
        self.values[:, slot, :, :length] = prefill.values[:, 0, :, :length]

    def move(self, source: int, target: int, length: int) -> None:
        self.keys[:, target, :, :length] = self.keys[:, source, :, :length]
        self.values[:, target, :, :length] = self.values[:, source, :, :length]


@dataclass(eq=False)
class _Row:
    request: Request
    length: int  # positions in the cache
    last: int  # the id to feed next


class Engine:
    """Decodes the requests given to :meth:`submit`, up to ``max_batch`` together, with up to
    ``max_queue`` more waiting for a slot. Run :meth:`run` in a thread of its own; :meth:`stop`
    ends it (requests still there end ``"cancelled"``)."""

    def __init__(self, model: GPTModel, max_batch: int = 8, max_queue: int = 32) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}")
        self.model = model.eval()
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.context_length = model.config.context_length
        self.device = next(model.parameters()).device
        self._waiting: collections.deque[Request] = collections.deque()
        self._rows: list[_Row] = []
        self._lock = threading.Condition()
        self._stopping = False
        self.steps = 0  # decoding steps run, and rows they decoded (for tests and the log)
        self.rows_decoded = 0
        self.cache = SlotCache(model, max_batch, self.context_length)
        self.thread: threading.Thread | None = None

    # --- the other threads' side -------------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue ``request``; :class:`QueueFull` when the batch and the queue are full."""
        if not request.prompt:
            raise ValueError("the prompt needs at least one token")
        if len(request.prompt) + request.max_tokens > self.context_length:
            raise ValueError(
                f"{len(request.prompt)} prompt tokens + {request.max_tokens} new ones exceed the "
                f"context length {self.context_length}"
            )
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._rows) + len(self._waiting) >= self.max_batch + self.max_queue:
                raise QueueFull(
                    f"{len(self._rows)} decoding and {len(self._waiting)} waiting, the most this server takes"
                )
            self._waiting.append(request)
            self._lock.notify()

    def load(self) -> tuple[int, int]:
        """(rows decoding, requests waiting)."""
        with self._lock:
            return len(self._rows), len(self._waiting)

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a daemon thread of its own."""
        self.thread = threading.Thread(target=self.run, name="scratchgpt-engine", daemon=True)
        self.thread.start()
        return self.thread

    def stop(self, timeout: float = 60.0) -> None:
        """End :meth:`run` and, when :meth:`start` started it, wait for its thread: it puts the
        weights back in their layout, which must not be cut short by the interpreter's exit
        (a daemon thread killed inside torch aborts the process)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # --- the engine's thread -----------------------------------------------------------------

    def run(self) -> None:
        """Admit, prefill, decode, until :meth:`stop`."""
        cpu = self.device.type == "cpu"
        layout = batch_layout(self.model, self.max_batch) if cpu else contextlib.nullcontext()
        with torch.no_grad(), layout:
            while True:
                with self._lock:
                    while not self._stopping and not self._rows and not self._waiting:
                        self._lock.wait()
                    if self._stopping:
                        break
                    joining = []
                    while self._waiting and len(self._rows) + len(joining) < self.max_batch:
                        joining.append(self._waiting.popleft())
                for request in joining:
                    self._guard(self._prefill, request)
                self._drop_cancelled()
                if self._rows:
                    self._guard(self._decode)
        with self._lock:
            left = [row.request for row in self._rows] + list(self._waiting)
            self._rows.clear()
            self._waiting.clear()
        for request in left:
            request.emit(None, "cancelled")

    def _guard(self, work: Callable[..., None], *args: object) -> None:
        """Run one step; a failure ends the requests it touched, not the server."""
        try:
            work(*args)
        except Exception as e:  # noqa: BLE001 (any failure of a step: the server keeps serving)
            log.exception("decoding failed")
            touched = list(args) if args else [row.request for row in self._rows]
            with self._lock:
                self._rows = [row for row in self._rows if row.request not in touched]
            for request in touched:
                request.emit(None, f"error: {type(e).__name__}: {e}")

    def _prefill(self, request: Request) -> None:
        if request.cancelled.is_set():
            request.emit(None, "cancelled")
            return
        if request.seed is not None:
            request.generator = torch.Generator(device=self.device)
            request.generator.manual_seed(request.seed)
        ids = torch.as_tensor([request.prompt], dtype=torch.long, device=self.device)
        scratch = KVCache(self.model.config, 1, len(request.prompt), self.device, self.cache.keys.dtype)
        logits = self.model(ids, cache=scratch, last_only=True)
        slot = len(self._rows)
        self.cache.fill(slot, scratch, len(request.prompt))
        row = _Row(request, len(request.prompt), 0)
        with self._lock:
            self._rows.append(row)
        self._take(row, logits[0, -1])

    def _decode(self) -> None:
        rows = self._rows
        lengths = torch.tensor([row.length for row in rows], dtype=torch.long, device=self.device)
        ids = torch.tensor([[row.last] for row in rows], dtype=torch.long, device=self.device)
        self.cache.step(lengths)
        same = all(row.length == rows[0].length for row in rows)
        # Rows at one length attend to every cached key: no mask, as a single row decodes alone.
        mask = None if same else (torch.arange(self.cache.span, device=self.device) <= lengths[:, None])[:, None, None]
        logits = self.model(ids, cache=self.cache, positions=lengths[:, None], attn_mask=mask, last_only=True)
        self.steps += 1
        self.rows_decoded += len(rows)
        for row, row_logits in zip(list(rows), logits[:, -1]):
            row.length += 1
            self._take(row, row_logits)

    def _take(self, row: _Row, logits: torch.Tensor) -> None:
        """Pick the row's next id from its logits; emit it, or end the request."""
        r = row.request
        token = int(sample_next(logits[None].float(), r.temperature, r.top_k, r.top_p, r.generator)[0])
        if r.eos_id is not None and token == r.eos_id:
            self._leave(row, "stop")
            return
        r.generated += 1
        row.last = token
        r.emit(token, None)
        if r.generated >= r.max_tokens:
            self._leave(row, "length")

    def _drop_cancelled(self) -> None:
        for row in [row for row in self._rows if row.request.cancelled.is_set()]:
            self._leave(row, "cancelled")

    def _leave(self, row: _Row, reason: str) -> None:
        """The row leaves the batch; the last row moves into its slot."""
        with self._lock:
            slot = self._rows.index(row)
            last = len(self._rows) - 1
            if slot != last:
                moved = self._rows[last]
                self.cache.move(last, slot, moved.length)
                self._rows[slot] = moved
            self._rows.pop()
        row.request.emit(None, reason)
