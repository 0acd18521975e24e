"""GPT-2 from the Hugging Face Hub (scratchgpt.formats.hub) against a Hub-shaped server on
127.0.0.1 (tests/hub_server.py) reached through ``HF_ENDPOINT``: the converted model gives
``transformers``' logits for the same files; a wrong revision, a missing file, a pickle-only
repository, a tampered cache and an offline cold cache are clear errors; offline with a warm
cache needs no request. A hostile Hub meets the download guarantees: a body past the listed
size, a trickle past the total deadline, plain http (a redirect or the endpoint) and an absurd
config.json are refused, the last before any weights are requested."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from fakes import hf_model
from hub_server import COMMIT, REPO, flood, redirect, trickle
from scratchgpt.formats.gpt2 import WeightsError
from scratchgpt.formats.hub import check_endpoint, choose_files, import_hub
from scratchgpt.formats.modeldir import load_model, load_tokenizer
from scratchgpt.plumbing.sections.download import HttpParams
from scratchgpt.plumbing.sections.init import InitParams

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
        "tokenizer.json",
        "model.safetensors",
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
    """No network (here: a port nobody listens on) is a WeightsError that says what happened, and
    names HF_HUB_OFFLINE only when the cache holds the model."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    quick = HttpParams(retries=1, backoff=0)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsError, match=r"cannot list the repository's files \(connection failed") as cold:
        import_hub(REPO, COMMIT, tmp_path / "out", http=quick)
    assert "HF_HUB_OFFLINE" not in str(cold.value)
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    import_hub(REPO, COMMIT, tmp_path / "online")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(
        WeightsError, match=r"connection failed.*the model is in the Hugging Face cache .*HF_HUB_OFFLINE=1"
    ):
        import_hub(REPO, COMMIT, tmp_path / "out", http=quick)


# --- the download guarantees against a hostile Hub ------------------------------------------


def cache_files(suffix: str = "") -> list[Path]:
    return [p for p in Path(os.environ["HF_HUB_CACHE"]).rglob(f"*{suffix}") if p.is_file()]


@pytest.mark.parametrize("announce", [None, 10**12], ids=["unannounced", "announced"])
def test_a_body_past_the_listed_size_is_stopped_at_the_cap(hub, tmp_path, announce):
    """The listing's size is the cap: more bytes (with no length, or a length announcing more) stop
    the download as soon as the body passes it; nothing beyond the cap is written, nothing partial kept."""
    cap = (tmp_path / "hub-repo" / "model.safetensors").stat().st_size
    seen: dict = {}
    hub.responders["model.safetensors"] = flood(256 << 20, announce, Path(os.environ["HF_HUB_CACHE"]), seen)
    wording = rf"body passed {cap} bytes" if announce is None else rf"announces {announce} bytes, more than {cap}"
    with pytest.raises(
        WeightsError, match=rf"model.safetensors: (the server )?{wording} \(its size in the Hub's file listing\)"
    ):
        import_hub(REPO, COMMIT, tmp_path / "out")
    deadline = time.monotonic() + 30
    while not seen.get("done") and time.monotonic() < deadline:  # the server's thread may still be writing
        time.sleep(0.05)
    assert seen["done"], "the server was still sending 30 s after the client gave up"
    assert seen["partial"] <= cap
    assert seen["sent"] < cap + (64 << 20), "the client stopped reading long before the server's end"
    assert not cache_files(".incomplete") and all(p.stat().st_size < cap for p in cache_files())
    assert not (tmp_path / "out").exists()


def test_a_trickle_ends_at_the_total_deadline(hub, tmp_path):
    """download.http.total_timeout bounds the whole download, however slowly the bytes come."""
    seen: dict = {}
    hub.responders["model.safetensors"] = trickle(0.5, seen)
    start = time.monotonic()
    with pytest.raises(
        WeightsError, match=r"passed download.http.total_timeout \(3 s for all its files\) in model.safetensors"
    ):
        import_hub(REPO, COMMIT, tmp_path / "out", http=HttpParams(total_timeout=3))
    assert time.monotonic() - start < 30
    assert 0 < seen["sent"] < 60
    assert not (tmp_path / "out").exists()


def test_plain_http_is_refused_before_it_is_used(hub, tmp_path, monkeypatch):
    """A redirect of the weights to plain http elsewhere is refused before connecting, and so is
    an HF_ENDPOINT of plain http to another machine (before any request)."""
    hub.responders["model.safetensors"] = redirect("http://mirror.example")
    monkeypatch.setenv("HTTP_PROXY", hub.url)  # were the redirect followed, it would reach the fake hub
    monkeypatch.setenv("http_proxy", hub.url)
    with pytest.raises(
        WeightsError, match=r"refused redirect to http://mirror.example/.*model.safetensors \(not https\)"
    ):
        import_hub(REPO, COMMIT, tmp_path / "out")
    assert hub.proxied == [] and hub.fetched("model.safetensors") == 1  # the redirect only
    hub.requests.clear()
    monkeypatch.setenv("HF_ENDPOINT", "http://other-host.invalid")
    with pytest.raises(
        WeightsError, match=r"the Hub at http://other-host.invalid \(HF_ENDPOINT\) is not https://: refused"
    ):
        import_hub(REPO, COMMIT, tmp_path / "out")
    assert hub.requests == [] and hub.proxied == []
    assert not (tmp_path / "out").exists()


def test_allow_http_lets_plain_http_reach_another_host(hub, tmp_path, monkeypatch):
    """With init.allow_http the redirect to plain http is followed (here to the fake hub as a
    proxy for mirror.example), and HF_TOKEN stays with the Hub's own host."""
    assert InitParams().allow_http is False
    hub.responders["model.safetensors"] = redirect("http://mirror.example")
    monkeypatch.setenv("HTTP_PROXY", hub.url)
    monkeypatch.setenv("http_proxy", hub.url)
    out = import_hub(REPO, COMMIT, tmp_path / "out", allow_http=True)
    assert load_model(out).num_parameters() > 0
    assert [url for url, _ in hub.proxied] == [f"http://mirror.example/{REPO}/resolve/{COMMIT}/model.safetensors"]
    assert [auth for _, auth in hub.proxied] == [None], "the token is not sent to another host"
    check_endpoint("http://other-host.invalid", "HF_ENDPOINT", allow_http=True)
    with pytest.raises(WeightsError, match="init.allow_http: true"):
        check_endpoint("http://other-host.invalid", "HF_ENDPOINT", allow_http=False)
    check_endpoint("https://huggingface.co", "default", allow_http=False)


def changed_repo(hub, tmp_path, name: str, **config) -> str:
    """The tiny GPT-2 served as someone/<name>, its config.json changed by ``config``."""
    folder = tmp_path / name
    shutil.copytree(tmp_path / "hub-repo", folder)
    data = json.loads((folder / "config.json").read_text()) | config
    (folder / "config.json").write_text(json.dumps(data))
    hub.add(f"someone/{name}", COMMIT, folder)
    return f"someone/{name}"


def test_an_absurd_config_is_refused_before_the_weights_are_requested(hub, tmp_path):
    """config.json is fetched and checked first: a model that cannot fit in memory (or listed
    weights larger than its config can hold) never has its weights requested."""
    repo = changed_repo(hub, tmp_path, "absurd", n_embd=10**6, n_layer=10**4, n_head=8)
    with pytest.raises(
        WeightsError, match=r"config.json \(.*emb_dim=1000000, n_layers=10000\): needs ~[\d.]+ GB for its weights"
    ):
        import_hub(repo, COMMIT, tmp_path / "out")
    assert hub.fetched("config.json") == 1 and hub.fetched("model.safetensors") == 0
    repo = changed_repo(hub, tmp_path, "overlisted")
    hub.listed_sizes["model.safetensors"] = 10**12
    with pytest.raises(WeightsError, match=r"lists model.safetensors at 1000000000000 bytes, more than the GPT-2"):
        import_hub(repo, COMMIT, tmp_path / "out")
    assert hub.fetched("model.safetensors") == 0
    hub.listed_sizes = {"vocab.json": 10**10}
    with pytest.raises(WeightsError, match=r"lists vocab.json at 10000000000 bytes, more than such a file may have"):
        import_hub(repo, COMMIT, tmp_path / "out")
    assert hub.fetched("vocab.json") == 0 and hub.fetched("model.safetensors") == 0
    assert not (tmp_path / "out").exists()
