"""Model directories (scratchgpt.formats.modeldir): a model saved and loaded back, tied or not;
what is not a model directory is rejected; corrupt or truncated weights are named (LoRA adapters
saved alone: tests/formats/test_finetuned.py)."""

import hashlib
import json

import pytest
import torch

from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import WordTokenizer
from scratchgpt.formats import modeldir
from scratchgpt.formats.modeldir import (
    ModelError,
    check_fits,
    load_model,
    load_tokenizer,
    read_model_config,
    save_model,
    save_tokenizer,
    write_manifest,
)

TINY = GPTConfig(vocab_size=101, context_length=24, emb_dim=32, n_heads=4, n_layers=3, drop_rate=0.1)


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


# ---------------------------------------------------------------------------------------------
# The folder verified whole: manifest, config fields, memory


def word_model_dir(folder, config=TINY, words="every effort moves you forward"):
    """A model directory as the pipeline writes one: tokenizer first, then config and weights."""
    torch.manual_seed(0)
    meta = {"tokenizer": save_tokenizer(WordTokenizer.build([words]), folder)}
    return save_model(GPTModel(config), folder, metadata=meta)


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_manifest_covers_every_file(tmp_path):
    folder = word_model_dir(tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text())["sha256"]
    assert sorted(manifest) == ["config.json", "model.safetensors", "tokenizer/vocab.json"]
    for name, digest in manifest.items():
        assert digest == hashlib.sha256((folder / name).read_bytes()).hexdigest(), name
    assert manifest["model.safetensors"] == read_model_config(folder)[1]["weights_sha256"]


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        # n_heads 4 → 2 still divides emb_dim: a valid config, only the digest tells it changed
        (lambda f: edit_json(f / "config.json", lambda d: d["model"].update(n_heads=2)), "config.json does not match"),
        (lambda f: (f / "tokenizer" / "vocab.json").write_text('["a", "b"]'), "vocab.json does not match"),
        (lambda f: (f / "tokenizer" / "encoder.json").write_text("{}"), "encoder.json: not listed in manifest.json"),
        (lambda f: (f / "tokenizer" / "vocab.json").unlink(), "vocab.json not found, but manifest.json lists it"),
        (lambda f: (f / "manifest.json").unlink(), "manifest.json not found"),
        (lambda f: (f / "manifest.json").write_text("{"), "manifest.json: not readable JSON"),
    ],
)
def test_a_folder_edited_after_it_was_written_is_named(tmp_path, edit, named):
    folder = word_model_dir(tmp_path / "m")
    load_model(folder), load_tokenizer(folder)  # as written: loads
    edit(folder)
    for load in (load_model, load_tokenizer, read_model_config):
        with pytest.raises(ModelError, match=named) as caught:
            load(folder)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"n_heads": 5}, r"emb_dim must be divisible by n_heads \(5\), got 32"),
        ({"emb_dim": 0}, "emb_dim must be a positive integer, got 0"),
        ({"n_layers": -1}, "n_layers must be a positive integer"),
        ({"context_length": 2**20 + 1}, "context_length must be <= 1048576"),
        ({"vocab_size": 2**40}, "vocab_size must be <= 4194304"),
        ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\)"),
        ({"drop_rate": "0.1"}, r"drop_rate must be in \[0, 1\)"),
        ({"qkv_bias": 1}, "qkv_bias must be true or false"),
        ({"n_layers": None}, "n_layers must be a positive integer"),
        ({"surprise": 1}, "unknown GPTConfig keys: surprise"),
        ({"vocab_size": 6}, "model.vocab_size must cover the tokenizer's 7 tokens, got 6"),
    ],
)
def test_every_config_field_is_validated_naming_the_file(tmp_path, monkeypatch, change, named):
    """A config.json edited and its manifest rewritten to match (so that only the fields speak):
    each bad field is a one-line error naming the file and the key, before any tensor exists."""
    folder = word_model_dir(tmp_path / "m")
    edit_json(folder / "config.json", lambda d: d["model"].update(change))
    write_manifest(folder)
    monkeypatch.setattr(torch.nn.Module, "__init__", lambda *a, **k: pytest.fail("a module was built"))
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelError, match=named) as caught:
            load(folder)
        assert str(caught.value).startswith(str(folder / "config.json")) and "\n" not in str(caught.value)


def test_a_missing_config_key_is_named(tmp_path):
    folder = word_model_dir(tmp_path / "m")
    edit_json(folder / "config.json", lambda d: d["model"].pop("n_heads"))
    write_manifest(folder)
    with pytest.raises(ModelError, match=r"config.json: model.n_heads: required key is missing"):
        load_model(folder)


def test_a_model_that_cannot_fit_is_refused_before_loading(tmp_path, monkeypatch):
    folder = word_model_dir(tmp_path / "m")
    need = TINY.memory_estimate()
    monkeypatch.setattr(modeldir, "available_memory", lambda device: need - 1)
    monkeypatch.setattr(modeldir, "load_file", lambda *a, **k: pytest.fail("weights were read"))
    with pytest.raises(
        ModelError,
        match=r"config.json \(model.vocab_size=101, model.context_length=24, "
        r"model.emb_dim=32, model.n_layers=3\): needs ~0.0 GB for its weights, this machine has",
    ):
        load_model(folder)


def test_check_fits_names_the_keys_of_a_model_no_machine_holds():
    """`-S model.emb_dim=100000` on params.yaml's model, as the pretrain stage checks it before
    building the model: the real machine's memory, a one-line error naming the keys."""
    config = GPTConfig(vocab_size=50257, context_length=128, emb_dim=100000, n_heads=4, n_layers=4, tie_weights=True)
    keys = modeldir.size_keys(config, "model.") + ", pretrain.batch_size=8, pretrain.max_length=128"
    with pytest.raises(ModelError) as caught:
        check_fits(config, "cpu", keys, batch_size=8, seq_len=128)
    message = str(caught.value)
    assert message.startswith(
        "model.vocab_size=50257, model.context_length=128, model.emb_dim=100000, model.n_layers=4"
    )
    need = config.memory_estimate(8, 128) / 1e9
    assert need > 5000 and f": needs ~{need:.1f} GB to train, this machine has " in message
    assert "\n" not in message
    assert check_fits(TINY, "cpu", "tiny", batch_size=8, seq_len=24) == TINY.memory_estimate(8, 24)
