"""The init stage: our pretrained model, OpenAI's GPT-2 (through the cache and converter) or a
local folder becomes models/base with the finetuning dropout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_stage
from fakes import TINY, openai_arrays, write_openai_checkpoint
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.errors import PipelineError
from scratchgpt.formats.gpt2 import WeightsError
from scratchgpt.formats.hf import export_hf
from scratchgpt.formats.modeldir import ModelError, load_model, save_model, save_tokenizer
from scratchgpt.formats.openai import convert_tf_checkpoint
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.sections.init import InitParams

init = load_stage("init")

CFG = GPTConfig(vocab_size=50257, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1, tie_weights=True)


@pytest.fixture
def repo(tmp_path, monkeypatch, mirror):
    """A working directory with models/pretrained, as the pretrain stage leaves it."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = GPTModel(CFG)
    save_model(model, paths.PRETRAINED, {"tokenizer": save_tokenizer(GPT2Tokenizer(mirror / "gpt2"), paths.PRETRAINED)})
    return model.eval()


def logits(model, n=12):
    ids = torch.arange(n)[None] * 7 % model.config.vocab_size
    with torch.no_grad():
        return model.eval()(ids)


def test_pretrained_source_with_finetuning_dropout(repo):
    summary = init.build_base(InitParams(source="pretrained", drop_rate=0.0))
    model = load_model(paths.BASE)
    assert model.config == CFG.replace(drop_rate=0.0)
    assert torch.equal(logits(model), logits(repo))
    assert summary == {"parameters": repo.num_parameters()}, "measured values only: source and shape are params"
    assert (paths.BASE / "tokenizer" / "encoder.json").is_file()
    init.build_base(InitParams(source="pretrained", drop_rate=None))
    assert load_model(paths.BASE).config.drop_rate == 0.1


def test_missing_pretrained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="models/pretrained not found: run `dvc repro pretrain`"):
        init.build_base(InitParams())
    assert not paths.BASE.exists()


def test_hugging_face_folder_source(repo):
    export_hf(paths.PRETRAINED, "exported/hf")
    init.build_base(InitParams(source="./exported/hf", drop_rate=0.0))
    torch.testing.assert_close(logits(load_model(paths.BASE)), logits(repo), atol=1e-5, rtol=0)


def test_missing_folder_source(repo):
    with pytest.raises(PipelineError, match="init.source: './nope' is not a folder"):
        init.build_base(InitParams(source="./nope"))


def test_openai_source_downloads_into_the_cache_and_converts(repo, tmp_path, monkeypatch):
    """gpt2-124M: the files land in $SCRATCHGPT_CACHE/gpt2/124M (here written by a fake
    download in OpenAI's layout, with a tiny vocabulary) and are converted."""
    tf = pytest.importorskip("tensorflow")
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    arrays = openai_arrays(TINY)
    calls = []

    def fake_download(size, dest, client=None, mirror=None):
        calls.append((size, str(dest)))
        write_openai_checkpoint(tf, dest, TINY, arrays)
        return dest

    monkeypatch.setattr(init, "download_openai", fake_download)
    monkeypatch.setattr(init, "convert", lambda src, out: convert_tf_checkpoint(src, out, with_tokenizer=False))
    summary = init.build_base(InitParams(source="gpt2-124M", drop_rate=0.0))
    assert calls == [("124M", str(tmp_path / "cache" / "gpt2" / "124M"))]
    model = load_model(paths.BASE)
    assert model.config.qkv_bias and model.config.tie_weights and model.config.vocab_size == TINY["n_vocab"]
    assert np.allclose(model.tok_emb.weight.detach().numpy(), arrays["model/wte"])
    assert summary == {"parameters": model.num_parameters()}
    assert json.loads((paths.BASE / "config.json").read_text())["model"]["drop_rate"] == 0.0


def test_an_edited_pretrained_folder_is_refused_by_name(repo):
    """models/pretrained's config.json edited (n_heads 4 → 2, still a valid config): init copies
    it, finds it does not match its manifest, and names the file; models/base is not written."""
    config = paths.PRETRAINED / "config.json"
    data = json.loads(config.read_text())
    data["model"]["n_heads"] = 2
    config.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"config.json does not match its sha256 in manifest.json"):
        init.build_base(InitParams(source="pretrained", drop_rate=0.0))
    assert not paths.BASE.exists()


def test_a_converted_folder_gets_the_manifest_and_its_config_is_validated(repo):
    export_hf(paths.PRETRAINED, "exported/hf")
    init.build_base(InitParams(source="./exported/hf", drop_rate=0.2))
    manifest = json.loads((paths.BASE / "manifest.json").read_text())["sha256"]
    assert sorted(manifest) == ["config.json", "model.safetensors", "tokenizer/encoder.json", "tokenizer/vocab.bpe"]
    assert load_model(paths.BASE).config.drop_rate == 0.2  # the rewritten config is in the manifest
    hf_config = json.loads((Path("exported/hf/config.json")).read_text())
    hf_config["n_positions"] = 2**21
    Path("exported/hf/config.json").write_text(json.dumps(hf_config))
    with pytest.raises(WeightsError, match=r"exported/hf/config.json: invalid GPTConfig: context_length must be <="):
        init.build_base(InitParams(source="./exported/hf", drop_rate=0.0))


def test_hub_source_is_fetched_at_its_commit_and_converted(repo, hub, tmp_path, transformers):
    """hf:<owner>/<name> at init.revision: huggingface_hub's cache, then the Hugging Face import;
    the base model gives transformers' logits for the repository's files."""
    from hub_server import COMMIT, REPO

    summary = init.build_base(InitParams(source=f"hf:{REPO}", revision=COMMIT, drop_rate=0.0))
    base = load_model(paths.BASE)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hub-repo").eval()
    ids = torch.arange(12)[None] * 7
    with torch.no_grad():
        assert (logits(base) - reference(ids).logits).abs().max().item() <= 1e-5
    assert summary == {"parameters": base.num_parameters()}
    assert json.loads((paths.BASE / "config.json").read_text())["model"]["drop_rate"] == 0.0
    with pytest.raises(WeightsError, match="no such revision"):
        init.build_base(InitParams(source=f"hf:{REPO}", revision="f" * 40))
    assert load_model(paths.BASE).config == base.config  # the failed run left the base model as it was


def test_hub_source_downloads_under_download_http_and_init_allow_http(repo, monkeypatch):
    """The stage hands download.http (timeouts, retries, the total deadline) and init.allow_http
    to the Hub download; formats/hub's tests show what each of them bounds."""
    from scratchgpt.plumbing.sections.download import HttpParams

    seen = {}

    def fake_import(repo_id, revision, out_dir, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        raise PipelineError("stopped after the call")

    monkeypatch.setattr(init, "import_hub", fake_import)
    http = HttpParams(total_timeout=3.0)
    with pytest.raises(PipelineError, match="stopped after the call"):
        init.build_base(InitParams(source="hf:owner/gpt2", revision="a" * 40, allow_http=True), http=http)
    assert seen == {"repo_id": "owner/gpt2", "http": http, "allow_http": True}
    assert (paths.BASE / "config.json").is_file() is False  # nothing half-written
