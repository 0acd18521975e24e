"""Model directories (scratchgpt.formats.modeldir): a model saved and loaded back, tied or not;
what is not a model directory is rejected; corrupt or truncated weights are named; LoRA adapters
saved alone load to the merged model and notice a changed base."""

import hashlib
import json

import pytest
import torch

from fakes import logits, randomize_adapters
from scratchgpt.book.classify import to_classifier
from scratchgpt.book.lora import apply_lora, merge_lora
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.formats.modeldir import (
    ModelError,
    load_model,
    read_model_config,
    save_adapters,
    save_model,
)

TINY = GPTConfig(vocab_size=101, context_length=24, emb_dim=32, n_heads=4, n_layers=3, drop_rate=0.1)
TINY_LORA = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)


@pytest.mark.parametrize("tie", [False, True])
def test_model_directory_round_trip(tmp_path, tie):
    torch.manual_seed(1)
    model = GPTModel(TINY.replace(tie_weights=tie)).eval()
    save_model(model, tmp_path / "m", metadata={"tokenizer": {"kind": "word"}})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    config, extra = read_model_config(tmp_path / "m")
    assert config == model.config and extra["tokenizer"] == {"kind": "word"}
    assert extra["weights_sha256"] == hashlib.sha256((tmp_path / "m" / "model.safetensors").read_bytes()).hexdigest()
    again = load_model(tmp_path / "m")
    idx = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(idx), again(idx))
    assert (again.out_head.weight is again.tok_emb.weight) == tie
    assert not again.training


def test_load_rejects_what_is_not_a_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not a scratchgpt model config"):
        load_model(tmp_path)
    save_model(GPTModel(TINY), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        load_model(tmp_path)


def test_corrupt_or_truncated_weights_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_model(GPTModel(TINY), "models/base")
    weights = tmp_path / "models" / "base" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-100] ^= 0xFF  # inside a tensor: safetensors alone would load it
    weights.write_bytes(bytes(blob))
    with pytest.raises(
        ModelError,
        match=r"models/base/model.safetensors does not match the sha256 in config.json and manifest.json: "
        r"corrupt; rerun `dvc repro -f init`",
    ):
        load_model("models/base")
    load_model("models/base", verify=False)  # explicitly unchecked: loads
    weights.write_bytes(bytes(blob[:50]))
    with pytest.raises(ModelError, match=r"model.safetensors is unreadable .*dvc repro -f init"):
        load_model("models/base", verify=False)


@pytest.mark.parametrize("classifier", [False, True])
def test_adapters_alone_load_to_the_merged_model(tmp_path, classifier):
    torch.manual_seed(0)
    base = GPTModel(TINY_LORA)
    save_model(base, tmp_path / "base")
    model = load_model(tmp_path / "base")
    if classifier:
        model = to_classifier(model, trainable="all")
    randomize_adapters(apply_lora(model, rank=3, alpha=3))
    save_adapters(
        model,
        tmp_path / "adapters",
        tmp_path / "base",
        {"rank": 3, "alpha": 3, "targets": ["attention", "feed_forward", "head"]},
    )
    saved = sorted(p.name for p in (tmp_path / "adapters").iterdir())
    assert saved == ["adapters.safetensors", "config.json", "manifest.json"]
    config = json.loads((tmp_path / "adapters" / "config.json").read_text())
    assert config["lora"]["base"]["path"] == "../base"
    expected = logits(merge_lora(model))
    save_model(model, tmp_path / "merged")
    torch.testing.assert_close(logits(load_model(tmp_path / "adapters")), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(load_model(tmp_path / "merged")), expected, atol=0, rtol=0)
    save_model(GPTModel(TINY_LORA), tmp_path / "base")  # the base changes under the adapters
    with pytest.raises(Exception, match="has changed since the adapters were trained"):
        load_model(tmp_path / "adapters")
