"""What tests stand up or write themselves instead of the real thing: fake chat servers for the
LLM judge (Ollama's /api/chat and an OpenAI-compatible /v1/chat/completions), tiny GPT-2
checkpoints in OpenAI's TensorFlow layout, tiny random models (ours and Hugging Face's) and LoRA
adapters that do something."""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from scratchgpt.book.lora import LoRALinear
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.formats.modeldir import save_model

OPENAI_CHECKPOINT_STATE = 'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
TINY = dict(n_vocab=97, n_ctx=16, n_embd=32, n_head=4, n_layer=2)


@dataclass
class Answer:
    """One scripted reply: ``delay`` sleeps before answering, ``trickle`` sleeps before each
    byte of the body, ``drop`` closes the connection without answering."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0
    drop: bool = False


def chat(content: str) -> Answer:
    reply = {"model": "m", "message": {"role": "assistant", "content": content}, "done": True}
    return Answer(json.dumps(reply).encode())


def completion(content: str | None) -> Answer:
    """An OpenAI-compatible chat completion whose first choice says ``content``."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    return Answer(json.dumps({"id": "c1", "object": "chat.completion", "choices": [choice]}).encode())


def streamed(*parts: str) -> Answer:
    lines = [{"message": {"role": "assistant", "content": p}, "done": False} for p in parts]
    lines.append({"message": {"role": "assistant", "content": ""}, "done": True})
    return Answer(b"".join(json.dumps(line).encode() + b"\n" for line in lines), content_type="application/x-ndjson")


@dataclass
class FakeOllama:
    """POST /api/chat answers with the scripted answers in order (the last repeats); every request
    body is recorded as parsed JSON, and its headers."""

    answers: list[Answer] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    path: str = "/api/chat"

    def __post_init__(self) -> None:
        fake = self
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with fake.lock:
                    fake.bodies.append(json.loads(body))
                    fake.headers.append(dict(self.headers))
                    answers = fake.answers
                    answer = (answers.pop(0) if len(answers) > 1 else answers[0]) if answers else Answer(status=404)
                if self.path != fake.path:
                    answer = Answer(b'{"error": "not found"}', status=404)
                time.sleep(answer.delay)
                self.close_connection = True
                if answer.drop:
                    return
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(answer.body)))
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if answer.trickle:
                        for i in range(len(answer.body)):
                            self.wfile.write(answer.body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(answer.trickle)
                    else:
                        self.wfile.write(answer.body)
                except OSError:  # the client gave up waiting
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}{self.path}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def script(self, *answers: Answer) -> None:
        self.answers[:] = answers

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class FakeOpenAI(FakeOllama):
    """The same, at an OpenAI-compatible server's POST /v1/chat/completions (script it with
    :func:`completion`)."""

    path: str = "/v1/chat/completions"


def openai_arrays(h: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random values for every variable of OpenAI's checkpoint layout."""
    rng = np.random.default_rng(seed)
    d = h["n_embd"]

    def r(*shape, scale=0.2, offset=0.0):
        return (offset + scale * rng.standard_normal(shape)).astype(np.float32)

    arrays = {"model/wte": r(h["n_vocab"], d), "model/wpe": r(h["n_ctx"], d)}
    for i in range(h["n_layer"]):
        p = f"model/h{i}/"
        arrays |= {
            p + "ln_1/g": r(d, offset=1.0),
            p + "ln_1/b": r(d),
            p + "attn/c_attn/w": r(1, d, 3 * d),
            p + "attn/c_attn/b": r(3 * d),
            p + "attn/c_proj/w": r(1, d, d),
            p + "attn/c_proj/b": r(d),
            p + "ln_2/g": r(d, offset=1.0),
            p + "ln_2/b": r(d),
            p + "mlp/c_fc/w": r(1, d, 4 * d),
            p + "mlp/c_fc/b": r(4 * d),
            p + "mlp/c_proj/w": r(1, 4 * d, d),
            p + "mlp/c_proj/b": r(d),
        }
    arrays |= {"model/ln_f/g": r(d, offset=1.0), "model/ln_f/b": r(d)}
    return arrays


def write_openai_checkpoint(tf, folder: Path, hparams: dict, arrays: dict[str, np.ndarray]) -> Path:
    """OpenAI's folder: a TF1 Saver checkpoint under model.ckpt, its `checkpoint` file, hparams.json."""
    folder.mkdir(parents=True, exist_ok=True)
    tf1 = tf.compat.v1
    graph = tf1.Graph()
    with graph.as_default():
        for name, value in arrays.items():
            tf1.Variable(value, name=name)
        saver = tf1.train.Saver()
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            saver.save(session, str(folder / "model.ckpt"), write_state=False)
    (folder / "checkpoint").write_text(OPENAI_CHECKPOINT_STATE)
    (folder / "hparams.json").write_text(json.dumps(hparams, indent=2) + "\n")
    return folder


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (norm weights around 1), so a swapped or untransposed tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if p.ndim == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight") else 0.0
            p.copy_(offset + 0.2 * torch.randn(p.shape, generator=gen))
    return model.eval()


TIED = GPTConfig(
    vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True, tie_weights=True
)
BOOK_LIKE = TIED.replace(drop_rate=0.1, qkv_bias=False, tie_weights=False)


def our_model_dir(folder: Path, config: GPTConfig, seed: int = 0, metadata: dict | None = None) -> Path:
    """A model directory holding a random model of ``config``."""
    torch.manual_seed(seed)
    save_model(randomize_(GPTModel(config), seed), folder, metadata=metadata)
    return folder


def hf_model(transformers, seed: int = 0, **overrides):
    """A random ``transformers.GPT2LMHeadModel``, tiny but for ``overrides`` of its config."""
    tiny = dict(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    config = transformers.GPT2Config(**(tiny | overrides))
    torch.manual_seed(seed)
    return randomize_(transformers.GPT2LMHeadModel(config), seed)


def logits(model, seed=1):
    """The model's logits, in eval mode, for two fixed random rows of 12 ids below 97."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (2, 12), generator=g)
    with torch.no_grad():
        return model.eval()(ids)


def randomize_adapters(model):
    """Random B matrices, so that the LoRA adapters (a no-op as made) change the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.B.normal_(0, 0.05)
    return model
