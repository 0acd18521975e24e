"""OpenAI's TF checkpoints and Hugging Face GPT-2 folders ↔ our model directories
(scratchgpt.formats.openai, .openai_download, .hf and .convert).

Every conversion is checked against ``transformers.GPT2LMHeadModel`` holding the same numbers,
loaded by a mapping written here independently of scratchgpt.formats. The checkpoints are tiny
and random, written in OpenAI's exact TF1 Saver layout; downloads go to a local HTTP server.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fakes import BOOK_LIKE, TIED, TINY, hf_model, openai_arrays, our_model_dir, write_openai_checkpoint
from scratchgpt.files import sha256_file
from scratchgpt.formats.convert import detect
from scratchgpt.formats.gpt2 import WeightsError
from scratchgpt.formats.hf import export_hf, import_hf
from scratchgpt.formats.modeldir import (
    load_model,
    load_tokenizer,
    read_model_config,
    write_manifest,
)
from scratchgpt.formats.openai import convert_tf_checkpoint
from scratchgpt.formats.openai_download import (
    OPENAI_FILES,
    OPENAI_PRESETS,
    download_openai,
    expected_size,
    openai_file_specs,
)
from scratchgpt.plumbing.download import DownloadError
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import HttpParams
from scripted_server import Reply

TOL = 1e-5
ENCODER_SHA = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"


# ---------------------------------------------------------------------------------------------
# Helpers: HF references of OpenAI checkpoints, logits compared, tokenizer files (random models: fakes.py)


def hf_reference_from_openai(transformers, h: dict, arrays: dict[str, np.ndarray]):
    """GPT2LMHeadModel with the checkpoint's numbers: HF's Conv1D is [in, out] like TF's, minus the 1."""
    config = transformers.GPT2Config(
        vocab_size=h["n_vocab"],
        n_positions=h["n_ctx"],
        n_embd=h["n_embd"],
        n_layer=h["n_layer"],
        n_head=h["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    state = {"transformer.wte.weight": arrays["model/wte"], "transformer.wpe.weight": arrays["model/wpe"]}
    for i in range(h["n_layer"]):
        hf, tf = f"transformer.h.{i}.", f"model/h{i}/"
        for ln in ("ln_1", "ln_2"):
            state[f"{hf}{ln}.weight"], state[f"{hf}{ln}.bias"] = arrays[f"{tf}{ln}/g"], arrays[f"{tf}{ln}/b"]
        for conv in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            name = hf + conv.replace("/", ".")
            state[f"{name}.weight"], state[f"{name}.bias"] = arrays[f"{tf}{conv}/w"][0], arrays[f"{tf}{conv}/b"]
    state["transformer.ln_f.weight"], state["transformer.ln_f.bias"] = arrays["model/ln_f/g"], arrays["model/ln_f/b"]
    state["lm_head.weight"] = arrays["model/wte"]
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return model


def random_ids(vocab: int, ctx: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (2, ctx), generator=torch.Generator().manual_seed(seed))


def max_diff(ours: torch.nn.Module, hf, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (ours(ids) - hf(ids).logits).abs().max().item()


def copy_bpe(mirror: Path, folder: Path, names=("encoder.json", "vocab.bpe"), as_names=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in zip(names, as_names or names):
        shutil.copyfile(mirror / "gpt2" / name, folder / target)
    return folder


# ---------------------------------------------------------------------------------------------
# OpenAI TF checkpoint → our model


@pytest.fixture(scope="module")
def gpt2_vocab_ckpt(tf, tmp_path_factory, mirror):
    """A tiny checkpoint with GPT-2's real vocabulary and tokenizer files, as download_openai leaves it."""
    h = dict(TINY, n_vocab=50257)
    arrays = openai_arrays(h, seed=3)
    folder = write_openai_checkpoint(tf, tmp_path_factory.mktemp("openai") / "124M", h, arrays)
    copy_bpe(mirror, folder)
    return folder, h, arrays


def test_openai_checkpoint_layout_is_openais(gpt2_vocab_ckpt, tf):
    folder, h, arrays = gpt2_vocab_ckpt
    assert sorted(p.name for p in folder.iterdir()) == sorted(OPENAI_FILES)
    assert (folder / "checkpoint").stat().st_size == expected_size("124M", "checkpoint") == 77
    variables = dict(tf.train.list_variables(str(folder / "model.ckpt")))
    assert variables["model/h1/attn/c_attn/w"] == [1, 32, 96]
    assert set(variables) == set(arrays)


def test_convert_tf_checkpoint_matches_transformers(gpt2_vocab_ckpt, transformers, tmp_path):
    folder, h, arrays = gpt2_vocab_ckpt
    assert detect(folder) == "tf"
    out = convert_tf_checkpoint(folder, tmp_path / "gpt2")
    config, extra = read_model_config(out)
    assert config == TIED.replace(vocab_size=50257)
    assert extra["source"] == {"kind": "openai-tf", "name": "124M"}
    assert extra["tokenizer"] == {"kind": "gpt2", "encoder.json": ENCODER_SHA, "vocab.bpe": VOCAB_BPE_SHA}
    assert "out_head.weight" not in load_file(str(out / "model.safetensors"))  # tied: stored once
    assert load_tokenizer(out).encode("Every effort moves you") == [6109, 3626, 6100, 345]
    ours = load_model(out)
    reference = hf_reference_from_openai(transformers, h, arrays)
    assert max_diff(ours, reference, random_ids(50257, 16)) <= TOL


def test_export_carries_gpt2_tokenizer(gpt2_vocab_ckpt, transformers, tmp_path):
    folder, h, arrays = gpt2_vocab_ckpt
    ours = convert_tf_checkpoint(folder, tmp_path / "gpt2")
    hf_dir = export_hf(ours, tmp_path / "hf")
    assert sha256_file(hf_dir / "vocab.json") == ENCODER_SHA and sha256_file(hf_dir / "merges.txt") == VOCAB_BPE_SHA
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(hf_dir)
    text = "It had always been a pretty picture of life in the studio.<|endoftext|>"
    assert hf_tok.encode(text) == load_tokenizer(ours).encode(text)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(hf_dir)
    assert reloaded.config.eos_token_id == 50256
    assert max_diff(load_model(ours), reloaded, random_ids(50257, 16, seed=2)) <= TOL


def test_convert_tiny_vocab_without_tokenizer(tf, transformers, tmp_path):
    arrays = openai_arrays(TINY, seed=5)
    folder = write_openai_checkpoint(tf, tmp_path / "ckpt", TINY, arrays)
    with pytest.raises(WeightsError, match="encoder.json.*with_tokenizer=False"):
        convert_tf_checkpoint(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (folder / "checkpoint").unlink()  # no `checkpoint` file: model.ckpt is read all the same
    out = convert_tf_checkpoint(folder, tmp_path / "out", with_tokenizer=False)
    assert not (out / "tokenizer").exists() and "tokenizer" not in read_model_config(out)[1]
    assert max_diff(load_model(out), hf_reference_from_openai(transformers, TINY, arrays), random_ids(97, 16)) <= TOL


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda a: a.update({"model/h1/mlp/c_fc/w": a["model/h1/mlp/c_fc/w"][:, :, :96]}),
            r"variable model/h1/mlp/c_fc/w: shape \[1, 32, 96\] .* expected \[1, 32, 128\]",
        ),
        (lambda a: a.update({"model/wpe": a["model/wpe"][:8]}), r"variable model/wpe: shape \[8, 32\]"),
        (lambda a: a.pop("model/ln_f/b"), "variable model/ln_f/b is missing"),
    ],
    ids=["conv-shape", "wpe-shape", "missing"],
)
def test_convert_tf_bad_checkpoint_names_variable(tf, tmp_path, change, message):
    arrays = openai_arrays(TINY)
    change(arrays)
    folder = write_openai_checkpoint(tf, tmp_path / "ckpt", TINY, arrays)
    with pytest.raises(WeightsError, match=message):
        convert_tf_checkpoint(folder, tmp_path / "out", with_tokenizer=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "hparams, message",
    [
        ({k: v for k, v in TINY.items() if k != "n_head"}, "hparams.json: missing n_head"),
        (dict(TINY, n_head=5), r"hparams.json: .*emb_dim must be divisible by n_heads \(5\), got 32"),
    ],
)
def test_convert_tf_bad_hparams(tmp_path, hparams, message):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "hparams.json").write_text(json.dumps(hparams))
    with pytest.raises(WeightsError, match=message):
        convert_tf_checkpoint(tmp_path / "ckpt", tmp_path / "out", with_tokenizer=False)


# ---------------------------------------------------------------------------------------------
# Our model → Hugging Face → ours


@pytest.mark.parametrize("config", [TIED, BOOK_LIKE], ids=["gpt2-like", "book-like"])
def test_export_hf_loads_in_transformers(transformers, tmp_path, config):
    ours = our_model_dir(tmp_path / "ours", config)
    hf_dir = export_hf(ours, tmp_path / "hf")
    assert not (hf_dir / "vocab.json").exists()  # no GPT-2 tokenizer in this model
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(hf_dir)
    assert not reloaded.training
    cfg = reloaded.config
    assert cfg.tie_word_embeddings is config.tie_weights
    assert (cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) == (config.drop_rate,) * 3
    assert cfg.eos_token_id is None
    head = reloaded.lm_head.weight
    assert (head.data_ptr() == reloaded.transformer.wte.weight.data_ptr()) is config.tie_weights
    if not config.qkv_bias:
        assert not reloaded.transformer.h[1].attn.c_attn.bias.any()
    assert max_diff(load_model(ours), reloaded, random_ids(97, 16)) <= TOL


@pytest.mark.parametrize("config", [TIED, BOOK_LIKE], ids=["gpt2-like", "book-like"])
def test_round_trip_is_bit_identical(tmp_path, config):
    ours = our_model_dir(tmp_path / "ours", config, seed=7)
    hf_dir = export_hf(ours, tmp_path / "hf")
    back = import_hf(hf_dir, tmp_path / "back", with_tokenizer=False)
    before, after = load_model(ours), load_model(back)
    assert after.config == config
    a, b = before.state_dict(), after.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert load_file(str(back / "model.safetensors")).keys() == load_file(str(ours / "model.safetensors")).keys()


def test_round_trip_keeps_gpt2_tokenizer_files(tmp_path, mirror):
    ours = our_model_dir(tmp_path / "ours", TIED.replace(vocab_size=50257), metadata={})
    copy_bpe(mirror, ours / "tokenizer")
    write_manifest(ours)  # the folder assembled by hand: its manifest covers the added files
    hf_dir = export_hf(ours, tmp_path / "hf")
    back = import_hf(hf_dir, tmp_path / "back")
    for name in ("encoder.json", "vocab.bpe"):
        assert (back / "tokenizer" / name).read_bytes() == (mirror / "gpt2" / name).read_bytes()
    assert read_model_config(back)[1]["tokenizer"]["vocab.bpe"] == VOCAB_BPE_SHA


# ---------------------------------------------------------------------------------------------
# Hugging Face folders → our model


def openai_community_layout(model, folder: Path) -> Path:
    """Like openai-community/gpt2's files: no "transformer." prefix, mask buffers, no lm_head."""
    folder.mkdir()
    model.config.save_pretrained(folder)
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()}
    del state["lm_head.weight"]  # tied
    n = model.config.n_positions
    for i in range(model.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def pytorch_bin_layout(model, folder: Path) -> Path:
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize(
    "layout, overrides",
    [
        ("save_pretrained", {}),
        ("save_pretrained", {"tie_word_embeddings": False}),
        ("sharded", {}),
        ("openai-community", {}),
        ("pytorch_model.bin", {"tie_word_embeddings": False}),
        ("save_pretrained", {"activation_function": "gelu_pytorch_tanh"}),
    ],
)
def test_import_hf_matches_transformers(transformers, tmp_path, layout, overrides):
    model = hf_model(transformers, seed=11, **overrides)
    folder = tmp_path / "hf"
    if layout == "save_pretrained":
        model.save_pretrained(folder)
    elif layout == "sharded":
        model.save_pretrained(folder, max_shard_size="100KB")
        assert (folder / "model.safetensors.index.json").is_file()
    elif layout == "openai-community":
        openai_community_layout(model, folder)
    else:
        pytorch_bin_layout(model, folder)
    assert detect(folder) == "hf"
    out = import_hf(folder, tmp_path / "ours", with_tokenizer=False)
    ours = load_model(out)
    assert ours.config.tie_weights is overrides.get("tie_word_embeddings", True)
    assert ours.config.qkv_bias and ours.config.drop_rate == 0.1
    assert max_diff(ours, model, random_ids(97, 16)) <= TOL


@pytest.fixture
def saved_hf(transformers, tmp_path) -> Path:
    hf_model(transformers).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation_function": "relu"}, r'activation_function "relu" \(only "gelu_new"\)'),
        ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon 1e-06"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx true"),
        ({"scale_attn_weights": False}, "scale_attn_weights false"),
        ({"n_inner": 100}, r"n_inner 100 \(only null or 4 \* n_embd = 128\)"),
        ({"add_cross_attention": True}, "add_cross_attention true"),
        ({"model_type": "llama"}, 'model_type "llama" is not supported'),
    ],
)
def test_import_hf_rejects_unsupported_config(saved_hf, tmp_path, change, message):
    config = json.loads((saved_hf / "config.json").read_text())
    (saved_hf / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(WeightsError, match=message):
        import_hf(saved_hf, tmp_path / "out", with_tokenizer=False)
    assert not (tmp_path / "out").exists()


def edit_tensors(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.update({"transformer.h.1.mlp.c_fc.weight": torch.zeros(128, 32)}),
            r"tensor h.1.mlp.c_fc.weight: shape \[128, 32\] .* expected \[32, 128\]",
        ),
        (lambda s: s.pop("transformer.ln_f.bias"), "tensor ln_f.bias is missing"),
        (lambda s: s.update({"score.weight": torch.zeros(2, 32)}), "unexpected tensor.*score.weight"),
    ],
    ids=["shape", "missing", "unexpected"],
)
def test_import_hf_bad_tensors_named(saved_hf, tmp_path, edit, message):
    edit_tensors(saved_hf, edit)
    with pytest.raises(WeightsError, match=message):
        import_hf(saved_hf, tmp_path / "out", with_tokenizer=False)


def test_import_hf_qkv_bias_marker_needs_zero_biases(tmp_path):
    hf_dir = export_hf(our_model_dir(tmp_path / "ours", BOOK_LIKE), tmp_path / "hf")
    edit_tensors(hf_dir, lambda s: s["transformer.h.0.attn.c_attn.bias"].fill_(0.5))
    with pytest.raises(WeightsError, match="h.0.attn.c_attn.bias is not zero"):
        import_hf(hf_dir, tmp_path / "back", with_tokenizer=False)


def test_import_hf_never_unpickles(saved_hf, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (saved_hf / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": Payload()}, saved_hf / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="never pickled objects"):
        import_hf(saved_hf, tmp_path / "out", with_tokenizer=False)
    assert not marker.exists()
    torch.load(saved_hf / "pytorch_model.bin", weights_only=False)  # the payload is live: it would run
    assert marker.exists()


def test_import_hf_reads_no_other_formats(saved_hf, tmp_path):
    (saved_hf / "model.safetensors").rename(saved_hf / "tf_model.h5")
    with pytest.raises(WeightsError, match="no model.safetensors or pytorch_model.bin"):
        import_hf(saved_hf, tmp_path / "out", with_tokenizer=False)


def test_import_hf_tokenizer(transformers, tmp_path, mirror):
    folder = tmp_path / "hf"
    hf_model(transformers, vocab_size=50257).save_pretrained(folder)
    with pytest.raises(WeightsError, match="no vocab.json [+] merges.txt or tokenizer.json.*bpe_dir"):
        import_hf(folder, tmp_path / "out")
    bpe = copy_bpe(mirror, tmp_path / "bpe")
    out = import_hf(folder, tmp_path / "out", bpe_dir=bpe)
    assert sha256_file(out / "tokenizer" / "encoder.json") == ENCODER_SHA

    # openai-community/gpt2: the same files under HF's names
    copy_bpe(mirror, folder, as_names=("vocab.json", "merges.txt"))
    out = import_hf(folder, tmp_path / "out")
    assert (out / "tokenizer" / "vocab.bpe").read_bytes() == (mirror / "gpt2" / "vocab.bpe").read_bytes()

    # as transformers 4 wrote them: other bytes, the same tokenizer; saved as OpenAI's files
    vocab = json.loads((bpe / "encoder.json").read_text())
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False))
    out = import_hf(folder, tmp_path / "out")
    assert sha256_file(out / "tokenizer" / "encoder.json") == ENCODER_SHA
    assert sha256_file(out / "tokenizer" / "vocab.bpe") == VOCAB_BPE_SHA

    vocab["Ġthe"], vocab["Ġand"] = vocab["Ġand"], vocab["Ġthe"]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(WeightsError, match="not the same vocabulary"):
        import_hf(folder, tmp_path / "out3", bpe_dir=bpe)
    with pytest.raises(WeightsError, match="not a GPT-2 BPE"):
        import_hf(folder, tmp_path / "out3")
    assert not (tmp_path / "out3").exists()


def test_import_hf_tokenizer_json(transformers, tmp_path, mirror):
    """transformers 5 saves only tokenizer.json."""
    folder = tmp_path / "hf"
    hf_model(transformers, vocab_size=50257).save_pretrained(folder)
    copy_bpe(mirror, tmp_path / "src", as_names=("vocab.json", "merges.txt"))
    transformers.GPT2Tokenizer.from_pretrained(tmp_path / "src").save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file() and not (folder / "vocab.json").exists()
    out = import_hf(folder, tmp_path / "out")
    assert sha256_file(out / "tokenizer" / "encoder.json") == ENCODER_SHA
    assert sha256_file(out / "tokenizer" / "vocab.bpe") == VOCAB_BPE_SHA
    assert load_tokenizer(out).encode("Hello, world") == [15496, 11, 995]


# ---------------------------------------------------------------------------------------------
# Telling the layouts apart


def test_detect(tf, saved_hf, tmp_path):
    ckpt = write_openai_checkpoint(tf, tmp_path / "ckpt", TINY, openai_arrays(TINY))
    assert detect(ckpt) == "tf"
    assert detect(saved_hf) == "hf"
    ours = our_model_dir(tmp_path / "ours", TIED)
    with pytest.raises(WeightsError, match="already a scratchgpt model directory"):
        detect(ours)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="neither an OpenAI TensorFlow checkpoint .* nor a Hugging Face"):
        detect(tmp_path / "empty")
    with pytest.raises(WeightsError, match="no such folder"):
        detect(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# Downloads


def test_openai_file_specs():
    specs = {s.name.rsplit("/", 1)[1]: s for s in openai_file_specs("124M")}
    assert list(specs) == sorted(specs) and len(specs) == 7
    data = specs["model.ckpt.data-00000-of-00001"]
    assert data.size == 497_759_232 and data.sha256 is None
    assert data.name == "gpt2-models/124M/model.ckpt.data-00000-of-00001"
    assert data.urls == [
        "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/model.ckpt.data-00000-of-00001",
        "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2/124M/model.ckpt.data-00000-of-00001",
    ]
    assert (specs["encoder.json"].size, specs["encoder.json"].sha256) == (1042301, ENCODER_SHA)
    assert (specs["vocab.bpe"].size, specs["vocab.bpe"].sha256) == (456318, VOCAB_BPE_SHA)
    assert [specs[n].size for n in ("checkpoint", "model.ckpt.index", "model.ckpt.meta")] == [77, 5215, 471155]
    # hparams.json as OpenAI wrote it: indent 2, in this order, a final newline
    gpt2_small = dict(n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12)
    assert specs["hparams.json"].size == len(json.dumps(gpt2_small, indent=2) + "\n") == 90
    size = expected_size
    gpt2_medium = dict(gpt2_small, n_embd=1024, n_head=16, n_layer=24)
    assert size("355M", "hparams.json") == len(json.dumps(gpt2_medium, indent=2) + "\n") == 91
    assert (size("355M", "model.ckpt.index"), size("355M", "model.ckpt.meta")) == (10399, 926519)
    assert size("355M", "model.ckpt.data-00000-of-00001") == 1_419_292_672
    assert size("774M", "model.ckpt.data-00000-of-00001") == 3_096_120_320
    assert size("1558M", "model.ckpt.data-00000-of-00001") == 6_230_444_800
    assert size("774M", "model.ckpt.index") is None and size("1558M", "hparams.json") is None
    assert OPENAI_PRESETS == {"124M": "gpt2-small", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
    with pytest.raises(WeightsError, match="unknown GPT-2 size '7B'"):
        openai_file_specs("7B")


@pytest.fixture
def client():
    return HttpClient(HttpParams(connect_timeout=2, read_timeout=1, retries=0, backoff=0), sleep=lambda s: None)


def small_files() -> dict[str, bytes]:
    """Bodies of the 124M checkpoint's small files, of their real sizes."""
    rng = np.random.default_rng(0)
    names = ("checkpoint", "hparams.json", "model.ckpt.index")
    return {name: rng.bytes(expected_size("124M", name)) for name in names}


def test_download_primary_404_then_backup(server, client, tmp_path):
    bodies = small_files()
    for name, body in bodies.items():
        server.route(f"/backup/124M/{name}", Reply(body=body))
    bases = (server.url("/primary"), server.url("/backup"))
    out = download_openai("124M", tmp_path / "124M", client, base_urls=bases, names=list(bodies))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == bodies  # nothing partial left
    assert len(server.hits("/primary/124M/checkpoint")) == 1 and len(server.hits("/backup/124M/checkpoint")) == 1
    download_openai("124M", out, client, base_urls=bases, names=list(bodies))  # all present: no request
    assert len(server.hits("/backup/124M/checkpoint")) == 1
    with pytest.raises(WeightsError, match="not a GPT-2 checkpoint file: model.bin"):
        download_openai("124M", out, client, base_urls=bases, names=["model.bin"])


def test_download_rejects_wrong_size(server, client, tmp_path):
    server.route("/a/124M/model.ckpt.index", Reply(body=b"x" * 5214))
    server.route("/b/124M/model.ckpt.index", Reply(body=b"x" * 5216))
    with pytest.raises(
        DownloadError,
        match=r"(?s)size mismatch: expected 5215 bytes, got 5214.*announces 5216 bytes, more than 5215 \(the declared",
    ):
        download_openai(
            "124M", tmp_path, client, base_urls=(server.url("/a"), server.url("/b")), names=["model.ckpt.index"]
        )
    assert list(tmp_path.iterdir()) == []


def test_download_resumes_across_calls(server, client, tmp_path):
    body = np.random.default_rng(1).bytes(471155)  # model.ckpt.meta of 124M
    path = "/m/124M/model.ckpt.meta"
    server.route(path, Reply(body=body, truncate=200_000), Reply(body=body))
    args = dict(base_urls=(server.url("/m"),), names=["model.ckpt.meta"])
    with pytest.raises(DownloadError, match="connection broken after 200000 bytes"):
        download_openai("124M", tmp_path, client, **args)
    download_openai("124M", tmp_path, client, **args)
    assert (tmp_path / "model.ckpt.meta").read_bytes() == body
    assert server.hits(path)[-1].headers.get("Range") == "bytes=200000-"
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt.meta"]  # no partial file left


def test_download_tokenizer_from_mirror_checked(server, client, tmp_path, mirror):
    local = tmp_path / "mirror"
    copy_bpe(mirror, local / "gpt2-models" / "124M")
    args = dict(base_urls=(server.url("/gone"),), names=["encoder.json", "vocab.bpe"])
    out = download_openai("124M", tmp_path / "a", client, mirror=str(local), **args)
    assert sha256_file(out / "vocab.bpe") == VOCAB_BPE_SHA and sha256_file(out / "encoder.json") == ENCODER_SHA
    bad = local / "gpt2-models" / "124M" / "vocab.bpe"
    bad.write_bytes(bad.read_bytes().replace(b"h e\n", b"e h\n", 1))
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_openai("124M", tmp_path / "b", client, mirror=str(local), **args)
