"""Finetuned model directories (scratchgpt.formats.finetuned): LoRA adapters saved alone load to
the merged model and notice a changed base or an edited folder; the plain loader of
scratchgpt.formats.modeldir names the loader of such a folder."""

import json

import pytest
import torch

from fakes import logits, randomize_adapters
from scratchgpt.book.classify import to_classifier
from scratchgpt.book.lora import apply_lora, merge_lora
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.formats.classifier import load_classifier
from scratchgpt.formats.finetuned import load_finetuned, save_adapters
from scratchgpt.formats.modeldir import ModelError, load_model, save_model, write_manifest

TINY_LORA = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


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
    torch.testing.assert_close(logits(load_finetuned(tmp_path / "adapters")), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(load_model(tmp_path / "merged")), expected, atol=0, rtol=0)
    save_model(GPTModel(TINY_LORA), tmp_path / "base")  # the base changes under the adapters
    with pytest.raises(Exception, match="has changed since the adapters were trained"):
        load_finetuned(tmp_path / "adapters")


def test_the_plain_loader_refuses_adapters_alone_and_names_the_loader(tmp_path):
    torch.manual_seed(0)
    save_model(GPTModel(TINY_LORA), tmp_path / "base")
    model = randomize_adapters(apply_lora(load_model(tmp_path / "base"), rank=2, alpha=2))
    save_adapters(model, tmp_path / "adapters", tmp_path / "base", {"rank": 2, "alpha": 2, "targets": ["attention"]})
    with pytest.raises(ModelError, match=r"adapters: LoRA adapters over a base model, .*finetuned.load_finetuned"):
        load_model(tmp_path / "adapters")
    base = load_finetuned(tmp_path / "base")  # a plain directory loads through either
    torch.testing.assert_close(logits(base), logits(load_model(tmp_path / "base")), atol=0, rtol=0)


def test_an_edited_adapters_or_classifier_folder_is_named(tmp_path):
    torch.manual_seed(0)
    save_model(GPTModel(TINY_LORA), tmp_path / "base")
    model = randomize_adapters(apply_lora(to_classifier(load_model(tmp_path / "base"), trainable="all"), 3, 3))
    settings = {"rank": 3, "alpha": 3, "targets": ["attention"]}
    save_adapters(model, tmp_path / "adapters", tmp_path / "base", settings, {"classifier": {"labels": ["a"]}})
    edit_json(tmp_path / "adapters" / "config.json", lambda d: d["lora"].update(alpha=30))
    with pytest.raises(ModelError, match="adapters/config.json does not match its sha256 in manifest.json"):
        load_finetuned(tmp_path / "adapters")
    with pytest.raises(ModelError, match="adapters/config.json does not match"):
        load_classifier(tmp_path / "adapters")
    # the base edited under the adapters
    edit_json(tmp_path / "base" / "config.json", lambda d: d["model"].update(drop_rate=0.5))
    write_manifest(tmp_path / "adapters")
    with pytest.raises(ModelError, match="base/config.json does not match"):
        load_finetuned(tmp_path / "adapters")
