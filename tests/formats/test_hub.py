"""GPT-2 from the Hugging Face Hub (scratchgpt.formats.hub) against a Hub-shaped server on
127.0.0.1 (tests/hub_server.py) reached through ``HF_ENDPOINT``: the converted model gives
``transformers``' logits for the same files; a wrong revision, a missing file, a pickle-only
repository, a tampered cache and an offline cold cache are clear errors; offline with a warm
cache needs no request."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from fakes import hf_model
from hub_server import COMMIT, REPO
from scratchgpt.formats.gpt2 import WeightsError
from scratchgpt.formats.hub import choose_files, import_hub
from scratchgpt.formats.modeldir import load_model, load_tokenizer

OTHER = "1" * 40


def test_a_hub_model_gives_transformers_logits(hub, tmp_path, transformers):
    out = import_hub(REPO, COMMIT, tmp_path / "ours")
    ours = load_model(out).eval()
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hub-repo").eval()
    ids = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        diff = (ours(ids) - reference(ids).logits).abs().max().item()
    assert diff <= 1e-5
    assert load_tokenizer(out).encode("Hello, world") == [15496, 11, 995]
    # files at the commit asked for, the token from the environment, nothing else fetched
    assert {p.split("/")[-1] for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p} == {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    }
    assert all(f"/{COMMIT}" in p for _, p, _ in hub.requests)
    assert {auth for _, _, auth in hub.requests} == {"Bearer hf_test_token"}
    # a second import reads huggingface_hub's cache: no file is downloaded again
    import_hub(REPO, COMMIT, tmp_path / "again")
    assert hub.fetched("model.safetensors") == 1


def test_offline_with_a_warm_cache_makes_no_request(hub, tmp_path, monkeypatch):
    first = import_hub(REPO, COMMIT, tmp_path / "online")
    hub.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    second = import_hub(REPO, COMMIT, tmp_path / "offline")
    assert hub.requests == []
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


def test_offline_with_a_cold_cache_is_a_clear_error(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match=r"not in the Hugging Face cache .* HF_HUB_OFFLINE is set"):
        import_hub(REPO, COMMIT, tmp_path / "out")
    assert hub.requests == [] and not (tmp_path / "out").exists()


def test_a_wrong_revision_or_repository_is_named(hub, tmp_path):
    with pytest.raises(WeightsError, match=rf"{REPO} at {OTHER} .*: no such revision; pin a commit hash"):
        import_hub(REPO, OTHER, tmp_path / "out")
    with pytest.raises(WeightsError, match=r"openai-community/nope at .*: no such model \(or a private one"):
        import_hub("openai-community/nope", COMMIT, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_pickle_only_repository_is_refused_before_any_download(hub, tmp_path, transformers):
    folder = tmp_path / "pickled"
    folder.mkdir()
    model = hf_model(transformers)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    hub.add("someone/gpt2-pickled", COMMIT, folder)
    with pytest.raises(WeightsError, match=r"no model.safetensors, only pytorch_model.bin; only a single safetensors"):
        import_hub("someone/gpt2-pickled", COMMIT, tmp_path / "out")
    assert hub.fetched("pytorch_model.bin") == 0


def test_a_missing_file_is_named(hub, tmp_path):
    (tmp_path / "hub-repo" / "merges.txt").unlink()
    hub.add("someone/no-merges", COMMIT, tmp_path / "hub-repo")
    with pytest.raises(WeightsError, match=r"someone/no-merges: no GPT-2 tokenizer files"):
        import_hub("someone/no-merges", COMMIT, tmp_path / "out")
    with pytest.raises(WeightsError, match="no config.json: not a transformers model"):
        choose_files("x/y", {"model.safetensors": None})
    assert choose_files("x/y", {"config.json": None, "model.safetensors": "a", "tokenizer.json": None}) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_a_tampered_cache_is_refused(hub, tmp_path):
    import_hub(REPO, COMMIT, tmp_path / "first")
    blobs = list(Path(os.environ["HF_HUB_CACHE"]).glob("models--*/blobs/*"))
    weights = max(blobs, key=lambda p: p.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"model.safetensors in the cache .* does not match its sha256"):
        import_hub(REPO, COMMIT, tmp_path / "second")
    assert not (tmp_path / "second").exists()


def test_an_unreachable_hub_is_one_clear_error(hub, tmp_path, monkeypatch):
    """No network (here: a port nobody listens on) is a WeightsError that says what to do."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsError, match=r"cannot list the repository's files \(ConnectError: .*HF_HUB_OFFLINE=1"):
        import_hub(REPO, COMMIT, tmp_path / "out")
    assert not (tmp_path / "out").exists()
