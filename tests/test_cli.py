"""The command line (scratchgpt.cli): `generate` streams the continuation and names a missing
model; `weights convert`, `export-hf` and `download` work and say what went wrong in one line.
(`classify` is run by the finetune_classifier stage test, on the model that stage writes.)"""

import json
import subprocess
import sys

import torch

from fakes import BOOK_LIKE, TINY, hf_model, openai_arrays, our_model_dir, write_openai_checkpoint
from scratchgpt.book.generate import generate
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import WordTokenizer
from scratchgpt.cli import main as cli
from scratchgpt.formats.modeldir import load_model, read_model_config, save_model, save_tokenizer


def test_cli_streams_the_continuation(tmp_path, capsys):
    words = "every effort moves you forward and the story goes on".split()
    tok = WordTokenizer(sorted(set(words)) + ["<|endoftext|>", "<|unk|>"])
    cfg = GPTConfig(vocab_size=tok.vocab_size, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    torch.manual_seed(0)
    model = GPTModel(cfg).eval()
    save_model(model, tmp_path / "m", metadata={"tokenizer": save_tokenizer(tok, tmp_path / "m")})
    assert (
        cli(
            [
                "generate",
                "--model",
                str(tmp_path / "m"),
                "--prompt",
                "every effort moves you",
                "--max-new-tokens",
                "12",
                "--no-eos",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip()
    ids = tok.encode("every effort moves you")
    expected = tok.decode(ids + generate(model, [ids], 12)[0])
    assert out == expected
    code = cli(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"])
    assert code == 1
    assert "config.json not found" in capsys.readouterr().err


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scratchgpt", "weights", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_export_and_errors(tmp_path):
    ours = our_model_dir(tmp_path / "ours", BOOK_LIKE)
    done = run_cli("export-hf", str(ours), str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["tie_word_embeddings"] is False
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in (
        (("convert", str(empty), str(tmp_path / "out")), "neither an OpenAI TensorFlow checkpoint"),
        (("export-hf", str(empty), str(tmp_path / "x")), "config.json not found"),
    ):
        done = run_cli(*args)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_cli_convert_both_kinds(tf, transformers, tmp_path, capsys):
    ckpt = write_openai_checkpoint(tf, tmp_path / "ckpt", TINY, openai_arrays(TINY))
    assert cli(["weights", "convert", str(ckpt), str(tmp_path / "a"), "--no-tokenizer"]) == 0
    assert load_model(tmp_path / "a").config.qkv_bias
    hf_model(transformers).save_pretrained(tmp_path / "hf")
    assert cli(["weights", "convert", str(tmp_path / "hf"), str(tmp_path / "b"), "--no-tokenizer"]) == 0
    assert read_model_config(tmp_path / "b")[1]["source"]["kind"] == "huggingface"
    assert cli(["weights", "convert", str(tmp_path / "hf"), str(tmp_path / "c")]) == 1
    assert "no vocab.json + merges.txt or tokenizer.json" in capsys.readouterr().err


def test_cli_download_errors_in_one_line(server, tmp_path, capsys):
    assert cli(["weights", "download", "7B", str(tmp_path / "x")]) == 1
    assert "unknown GPT-2 size '7B'" in capsys.readouterr().err
    code = cli(
        [
            "weights",
            "download",
            "124M",
            str(tmp_path / "y"),
            "--base-url",
            server.url("/none"),
            "--mirror",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "could not download gpt2-models/124M/checkpoint" in err and "HTTP 404" in err
