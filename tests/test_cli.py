"""The command line (scratchgpt.cli): --help answers without importing torch or the module of a
command; bad arguments end in one line naming the option; `generate` streams the continuation and
`chat` answers with the book's Alpaca prompt (pipe mode, history, /reset, the next "###" section);
both refuse a classifier; `classify` prints aligned columns; `experiments` lists, shows and runs
only the target stages; `weights convert`, `export-hf` and `download` say what went wrong in one
line."""

import argparse
import importlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from committed import committed
from fakes import BOOK_LIKE, TINY, hf_model, openai_arrays, our_model_dir, write_openai_checkpoint
from scratchgpt import cli as cli_package
from scratchgpt.book.classify import Head
from scratchgpt.book.generate import generate
from scratchgpt.book.instruct import format_input
from scratchgpt.book.model import GPTConfig, GPTModel
from scratchgpt.book.tokenizer import WordTokenizer
from scratchgpt.cli import common, generation
from scratchgpt.cli import main as cli
from scratchgpt.cli.chat import EMPTY, HELP, Conversation, answer_so_far, converse, dropped_note
from scratchgpt.formats import modeldir
from scratchgpt.formats.modeldir import load_model, read_model_config, save_model, save_tokenizer
from scratchgpt.formats.openai_download import OPENAI_PRESETS
from scratchgpt.plumbing.experiments import changes, describe_value, load

ROOT = Path(__file__).resolve().parents[1]


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
                "--greedy",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip()
    ids = tok.encode("every effort moves you")
    expected = tok.decode(ids + generate(model, [ids], 12)[0])
    assert out == expected
    # By default chapter 5's sampling (temperature 1.4, top-k 25), which a seed fixes
    argv = ["generate", "--model", str(tmp_path / "m"), "--prompt", "every effort moves you", "--seed", "7"]
    assert cli([*argv, "--max-new-tokens", "12", "--no-eos"]) == 0
    sampled = generate(model, [ids], 12, temperature=1.4, top_k=25, generator=torch.Generator().manual_seed(7))[0]
    assert capsys.readouterr().out.strip() == tok.decode(ids + sampled)
    assert sampled != generate(model, [ids], 12)[0], "sampled, not greedy"
    with pytest.raises(SystemExit) as e:
        cli(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"])
    assert e.value.code == 2
    assert f"argument --model: {tmp_path / 'nope'}: no such directory" in capsys.readouterr().err


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
        assert len(lines) == 1 and re.match(r"scratchgpt weights [a-z-]+: error: ", lines[0]) and message in lines[0], (
            lines
        )
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


# ---------------------------------------------------------------------------------------------
# Fast help, one-line argument errors


HELPS = [
    [],
    ["params"],
    ["compare"],
    ["metrics"],
    ["generate"],
    ["chat"],
    ["classify"],
    ["serve"],
    ["weights"],
    ["weights", "download"],
    ["weights", "convert"],
    ["weights", "export-hf"],
    ["experiments"],
    ["experiments", "list"],
    ["experiments", "show"],
    ["experiments", "args"],
    ["experiments", "run"],
    ["experiments", "snapshot"],
    ["experiments", "figure"],
]
HEAVY = (
    "torch",
    "numpy",
    "dvc",
    "safetensors",
    "scratchgpt.book.model",
    "scratchgpt.formats.modeldir",
    "scratchgpt.cli.generation",
    *(cli_package.command_module(command) for command in cli_package.COMMANDS),
)


def subcommands(parser) -> list[list[str]]:
    """Every command and action a parser takes, as argv prefixes."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [[name]] + [[name, *rest] for rest in subcommands(sub)]
    return found


def test_help_answers_without_importing_torch():
    """Every --help exits 0 with its usage, and nothing heavy is imported for it."""
    script = (
        "import json, sys, contextlib, io\n"
        "from scratchgpt.cli import main\n"
        "out = {}\n"
        f"for argv in {HELPS!r}:\n"
        "    buf = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(buf):\n"
        "            main(argv + ['--help'])\n"
        "    except SystemExit as e:\n"
        "        out[' '.join(argv)] = [e.code, buf.getvalue()]\n"
        f"print(json.dumps({{'helps': out, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    helps = result["helps"]
    assert sorted(helps) == sorted(" ".join(a) for a in HELPS)
    for argv, (code, text) in helps.items():
        assert code == 0 and text.startswith("usage: scratchgpt"), argv
    for action in ("list", "show", "run"):
        assert f"    {action} " in helps["experiments"][1]
    assert "stop after N new tokens (>= 1; default 50)" in helps["generate"][1]
    assert "stop after N new tokens (>= 1; default 64)" in helps["chat"][1] and "/reset" in helps["chat"][1]
    for command in ("generate", "chat", "classify", "serve", "weights", "experiments"):
        assert command in helps[""][1]
    assert "--api-key-env NAME" in helps["serve"][1] and "/v1/chat/completions" in helps["serve"][1]


def test_params_checks_the_whole_file_and_names_each_problem(tmp_path, capsys):
    """A stage validates only its own sections; ``scratchgpt params`` (run by `make repro` before
    `dvc repro`) checks them all, so a typo in the last stage's section stops the first."""
    assert cli_package.main(["params", str(committed("params.yaml"))]) == 0
    assert capsys.readouterr().out == f"{committed('params.yaml')}: valid (10 sections)\n"
    data = yaml.safe_load((committed("params.yaml")).read_text())
    data["dpo"]["betta"] = 0.1
    data["report"]["samples"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    assert cli_package.main(["params", str(tmp_path / "params.yaml")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"scratchgpt params: error: {tmp_path / 'params.yaml'}: 2 problems"
    assert err[1].startswith("  dpo.betta: unknown key") and err[2].startswith("  report.samples: must be >= 0")


def test_every_command_and_action_has_its_help_checked():
    assert sorted(subcommands(cli_package.parser())) == sorted(a for a in HELPS if a)


def test_each_command_runs_in_a_module_of_its_own():
    """The parser's commands are COMMANDS, each run by ``run`` of scratchgpt.cli.<command>."""
    assert [argv[0] for argv in subcommands(cli_package.parser()) if len(argv) == 1] == list(cli_package.COMMANDS)
    for command in cli_package.COMMANDS:
        module = importlib.import_module(cli_package.command_module(command))
        assert callable(module.run), command


def test_the_names_the_command_line_repeats_agree_with_the_library():
    assert common.CONFIG_FILE == modeldir.CONFIG_FILE
    assert common.GPT2_SIZES == tuple(OPENAI_PRESETS)


@pytest.mark.parametrize(
    "args, option, message",
    [
        (["--max-new-tokens", "-5"], "--max-new-tokens", "must be >= 1, got -5"),
        (["--max-new-tokens", "many"], "--max-new-tokens", "expected a whole number"),
        (["--top-k", "0"], "--top-k", "must be >= 1, got 0"),
        (["--top-p", "1.5"], "--top-p", "must be in (0, 1], got 1.5"),
        (["--top-p", "0"], "--top-p", "must be in (0, 1], got 0"),
        (["--temperature", "nan"], "--temperature", "must be a finite number, got nan"),
        (["--temperature", "inf"], "--temperature", "must be a finite number, got inf"),
        (["--temperature", "-1"], "--temperature", "must be >= 0"),
        (["--device", "tpu"], "--device", "expected auto, cpu, mps, cuda or cuda:N, got 'tpu'"),
    ],
)
@pytest.mark.parametrize("command", ["generate", "chat"])
def test_bad_arguments_end_in_one_line_naming_the_option(language_model, capsys, command, args, option, message):
    prompt = ["--prompt", "x"] if command == "generate" else []
    with pytest.raises(SystemExit) as e:
        cli([command, "--model", str(language_model), *prompt, *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"scratchgpt {command}: error: argument {option}: {message}"), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_one_line(language_model, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["generate", "--model", str(language_model), "--prompt", "x", "--device", "cuda:0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argument --device: " in err and "CUDA is not available" in err


def test_a_model_directory_is_checked_before_anything_loads(tmp_path, classifier_model, language_model, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    cases = [
        (["generate", "--prompt", "x", "--model", str(tmp_path / "nope")], "no such directory"),
        (["chat", "--model", str(tmp_path / "empty")], "no config.json, not a model directory"),
        (["chat", "--model", str(tmp_path / "broken")], "unreadable"),
        (["generate", "--prompt", "x", "--model", str(classifier_model)], "is a classifier (2-class head)"),
        (["chat", "--model", str(classifier_model)], "is a classifier (2-class head)"),
        (["classify", "--model", str(language_model), "hi"], "is not a classifier"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            cli(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
        assert "argument --model: " in err and message in err, err


# ---------------------------------------------------------------------------------------------
# chat


@pytest.fixture
def language_model(tmp_path, tok):
    """A tiny random instruction model with GPT-2's tokenizer."""
    cfg = GPTConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    torch.manual_seed(0)
    folder = tmp_path / "instruct"
    meta = {"tokenizer": save_tokenizer(tok, folder), "instruct": {"format": "alpaca"}}
    save_model(GPTModel(cfg).eval(), folder, metadata=meta)
    return folder


@pytest.fixture
def classifier_model(tmp_path, tok):
    cfg = GPTConfig(vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0, n_classes=2)
    torch.manual_seed(0)
    folder = tmp_path / "classifier"
    head = Head(("ham", "spam"), "last_non_pad", tok.eot_id, 32)
    save_model(
        GPTModel(cfg).eval(), folder, metadata={"tokenizer": save_tokenizer(tok, folder), "classifier": head.to_dict()}
    )
    return folder


def alpaca(instruction: str) -> str:
    """The book's prompt for an instruction, with the response header the model continues."""
    return format_input({"instruction": instruction, "input": ""}) + "\n\n### Response:\n"


def test_chat_from_a_pipe_answers_as_greedy_generate_does(language_model, tok, monkeypatch, capsys):
    questions = ["Name a color", "What is 2 + 2?", "Rewrite: the cat sat."]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(questions) + "\n\n"))
    assert cli(["chat", "--model", str(language_model), "--max-new-tokens", "12", "--greedy"]) == 0
    out = capsys.readouterr().out
    model = load_model(language_model)
    answers = []
    for q in questions:
        ids = tok.encode(alpaca(q), allow_special=False)
        new = generate(model, [ids], 12, eos_id=tok.eot_id)[0]
        text = tok.decode([t for t in new if t != tok.eot_id])
        answers.append(text.split("###")[0].strip() + "\n")
    assert out == "\n".join(answers)  # the answers alone, a blank line between two, no prompts
    assert "".join(answers).strip()


@pytest.fixture
def prompts_fed(monkeypatch, tok):
    """The prompts chat feeds the model, decoded (the book's stream, spied on)."""
    fed = []
    real = generation.stream

    def spy(model, prompts, *args, **kwargs):
        fed.append(tok.decode(list(prompts[0])))
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(generation, "stream", spy)
    return fed


def test_chat_history_and_reset(language_model, monkeypatch, capsys, prompts_fed):
    lines = "first\nsecond\n/reset\nthird\n/quit\nfourth\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    assert cli(["chat", "--model", str(language_model), "--max-new-tokens", "3", "--history"]) == 0
    answers = capsys.readouterr().out.split("\n")
    assert len(prompts_fed) == 3  # nothing after /quit
    assert prompts_fed[0] == alpaca("first")
    second = prompts_fed[1]
    assert second.startswith(alpaca("first").removesuffix("\n")) and second.endswith(
        "### Instruction:\nsecond\n\n### Response:\n"
    )
    assert answers[0] in second and second.count("Below is an instruction") == 1
    assert prompts_fed[2] == alpaca("third")  # after /reset: no earlier turn


def test_chat_without_history_from_a_pipe(language_model, monkeypatch, capsys, prompts_fed):
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\nsecond\n"))
    assert cli(["chat", "--model", str(language_model), "--max-new-tokens", "2"]) == 0
    assert prompts_fed == [alpaca("first"), alpaca("second")]


@pytest.mark.parametrize("stdin_errors", ["strict", "surrogateescape"])
def test_chat_reads_stdin_that_is_not_utf8_with_one_warning(language_model, stdin_errors):
    """Bytes that are not UTF-8 on stdin become U+FFFD with one line of warning, not a traceback,
    whatever Python's own stdin would do with them (strict under a UTF-8 locale such as
    en_US.UTF-8, surrogateescape under C); the lines around them are still answered."""
    done = subprocess.run(
        [sys.executable, "-m", "scratchgpt", "chat", "--model", str(language_model), "--max-new-tokens", "2"],
        input=b"\xff\xfe\x80 Name a color\n\xc3\x28\nWhat is 2 + 2?\n",
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": f"utf-8:{stdin_errors}"},
    )
    err = done.stderr.decode().splitlines()
    assert done.returncode == 0, err
    assert err[0] == (
        "scratchgpt chat: warning: stdin is not UTF-8 (line 1 first); bytes that cannot be decoded are read as U+FFFD"
    )
    assert all(line == EMPTY for line in err[1:]), err  # a tiny model may answer nothing: said, once each
    assert done.stdout.decode().count("\n") >= 5, "three answers, each ending its line, a blank line between two"


def test_the_oldest_turns_go_when_the_context_is_full(tok):
    conv = Conversation(tok, context_length=120, max_new_tokens=20, keep_history=True)
    conv.add("one", "uno")
    conv.add("two", "dos")
    text = tok.decode(conv.prompt_ids("three"))
    assert "one" in text and "two" in text and conv.dropped == 0
    conv.context_length = len(tok.encode(conv.text([("two", "dos")], "three"))) + 20
    text = tok.decode(conv.prompt_ids("three"))
    assert "uno" not in text and "dos" in text and conv.dropped == 1
    conv.context_length = 10  # not even the instruction fits: it goes alone, the window slides
    assert tok.decode(conv.prompt_ids("three")) == alpaca("three") and conv.dropped == 2
    conv.reset()
    assert conv.turns == []


def test_chat_commands_at_a_terminal():
    """/help lists the commands, /reset forgets everything (the note on left-out turns too),
    exit, quit, /exit and /quit end; an empty answer and left-out turns are said in one line."""
    tok = WordTokenizer(["a", "<|endoftext|>", "<|unk|>"])
    conv = Conversation(tok, context_length=100, max_new_tokens=5, keep_history=True)
    said, asked = [], []

    def reply(ids):
        asked.append(ids)
        return iter(["", "###"])  # an empty answer

    lines = ["/help", "q1", "/reset", "exit", "q2"]
    converse(conv, reply, lines, lambda text: None, note=said.append, typed=True)
    assert said == [HELP, EMPTY, "(history cleared)"] and len(asked) == 1, "nothing after exit"
    assert "/reset" in HELP and "/quit" in HELP and "exit" in HELP
    for end in ("quit", "/exit", "/quit", "EXIT"):
        asked.clear()
        converse(conv, reply, [end, "q3"], lambda text: None, typed=True)
        assert asked == [], end
    asked.clear()
    converse(conv, reply, ["exit"], lambda text: None)  # from a pipe, a line "exit" is a question
    assert len(asked) == 1
    conv.dropped = 3
    conv.reset()
    assert conv.dropped == 0 and conv.turns == []
    assert dropped_note(1) == "(the oldest turn no longer fits the context and was left out)"
    assert dropped_note(2) == "(the oldest 2 turns no longer fit the context and were left out)"


def test_an_answer_ends_before_the_next_section():
    assert answer_so_far("Blue.\n\n### Instruction:\nMore") == ("Blue.", True)
    assert answer_so_far("\nBlue ##") == ("Blue", False)
    conv = Conversation(WordTokenizer(["a", "<|endoftext|>", "<|unk|>"]), 100, 5, keep_history=True)
    written = []

    def reply(steps):
        return lambda ids: iter(steps)

    converse(conv, reply(["Bl", "Blue", "Blue\n#", "Blue\n##", "Blue\n###", "never"]), ["q1"], written.append)
    assert written == ["Bl", "ue", "\n"]
    written.clear()
    converse(conv, reply(["C", "C#"]), ["q2"], written.append)  # ended without a section: all of it
    assert "".join(written) == "C#\n"
    assert conv.turns == [("q1", "Blue"), ("q2", "C#")]


# ---------------------------------------------------------------------------------------------
# classify


def test_classify_prints_aligned_columns(classifier_model, capsys):
    texts = ["You are a winner!", "See you at 6?"]
    assert cli(["classify", "--model", str(classifier_model), *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts):
        assert re.fullmatch(r"(spam    |not spam)  [01]\.\d{3}  " + re.escape(text), line), line


def test_classify_reads_stdin_that_is_not_utf8_with_one_warning(classifier_model):
    done = subprocess.run(
        [sys.executable, "-m", "scratchgpt", "classify", "--model", str(classifier_model)],
        input=b"You are a \xff winner!\nSee you at 6?\n",
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
    )
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert err == (
        "scratchgpt classify: warning: stdin is not UTF-8 (line 1 first); "
        "bytes that cannot be decoded are read as U+FFFD\n"
    )
    lines = done.stdout.decode().splitlines()
    assert [line.split("  ")[-1] for line in lines] == ["You are a \ufffd winner!", "See you at 6?"]


# ---------------------------------------------------------------------------------------------
# experiments


def test_experiments_list_and_show(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert cli(["experiments", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:3] == ["NAME", "STAGES", "DESCRIPTION"]
    assert any(
        re.match(r"book-ch05\s+pretrain\s+Chapter 5 as the book runs it\s+6 min on 2 CPU cores", row) for row in rows
    ), rows
    assert cli(["experiments", "show", "book-ch05"]) == 0
    out = capsys.readouterr().out
    experiment = load("book-ch05")
    assert experiment.time in out and "stages:  pretrain\n" in out
    for key, old, new in changes(experiment):
        assert re.search(
            rf"^  {re.escape(key)}\s+{re.escape(describe_value(old))} → {re.escape(describe_value(new))}$", out, re.M
        )
    assert "run:     dvc exp run -n book-ch05 -S model.context_length=256" in out and out.rstrip().endswith(" pretrain")
    assert "extends:" not in out
    assert cli(["experiments", "show", "book-ch07-dpo"]) == 0
    out = capsys.readouterr().out
    assert "extends: book-ch07 (its params first, then this file's)\nstages:  finetune_dpo\n" in out
    assert "  instruct.lr" in out and "  dpo.eval_freq" in out  # book-ch07's keys, then its own
    assert cli(["experiments", "show", "book-ch99"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such experiment; expected one of: book-appE" in err


def test_experiments_run_calls_dvc_on_the_target_stages(tmp_path, monkeypatch, capsys):
    """The venv's dvc comes first on PATH: a stand-in beside a fake sys.executable records its arguments."""
    monkeypatch.chdir(ROOT)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dvc"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'args'}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert cli(["experiments", "run", "book-ch06", "--queue"]) == 0
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:4] == ["exp", "run", "-n", "book-ch06"]
    assert args[-2:] == ["--queue", "finetune_classifier"]
    assert "init.source=gpt2-124M" in args
    assert cli(["experiments", "run", "--queue", "book-ch05", "-v"]) == 0
    args = (tmp_path / "args").read_text().splitlines()
    assert args[-3:] == ["--queue", "-v", "pretrain"]
    assert "+ dvc exp run -n book-ch05" in capsys.readouterr().err


def test_experiments_run_snapshots_what_it_ran(tmp_path, monkeypatch, capsys):
    """A run that is not queued ends by copying its results where the report reads them; a failed
    or queued one does not."""
    from scratchgpt.cli import experiments
    from scratchgpt.plumbing import results

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(experiments, "dvc_running", lambda: None)  # whatever runs in the checkout
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dvc"
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    taken = []
    monkeypatch.setattr(results, "snapshot", lambda name: taken.append(name) or tmp_path / f"{name}.json")
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    assert cli(["experiments", "run", "book-ch05"]) == 3
    assert taken == []
    fake.write_text("#!/bin/sh\nexit 0\n")
    assert cli(["experiments", "run", "book-ch05", "--queue"]) == 0
    assert taken == [] and "scratchgpt experiments snapshot book-ch05" in capsys.readouterr().err
    assert cli(["experiments", "run", "book-ch05"]) == 0
    assert taken == ["book-ch05"]
    assert capsys.readouterr().out.strip() == str(tmp_path / "book-ch05.json")


def test_experiments_list_fits_a_terminal(monkeypatch, capsys):
    """One experiment a line within 100 columns (a long time wraps under its column), in the
    words of the project's users."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(ROOT)
    assert cli(["experiments", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100, lines
    assert len(lines) == 1 + len(list((ROOT / "experiments").glob("*.yaml")))
    assert "test machines" not in "\n".join(lines)


def test_compare_tells_float_noise_from_a_difference(tmp_path, monkeypatch, capsys):
    """The workspace's metrics against a commit's: equal, float noise within --rtol (what
    another CPU gives), or different (exit 1); the CPU and its SIMD flags are named."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    metrics = tmp_path / "metrics" / "pretrain" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"final_val_loss": 6.125, "steps": 150, "untrained_val_loss": 10.900361442565918}))
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "run"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    metrics.write_text(json.dumps({"final_val_loss": 6.125, "steps": 150, "untrained_val_loss": 10.900361633300781}))
    assert cli(["compare"]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("CPU: ")
        and "untrained_val_loss: 10.90036144 → 10.90036163 (1.7e-08 relative: float noise)" in out
    )
    assert out.rstrip().endswith(
        "2 numbers equal, 1 within 0.001 relative (float noise: another CPU's SIMD units), 0 differ from HEAD"
    )
    metrics.write_text(json.dumps({"final_val_loss": 6.5, "steps": 150, "untrained_val_loss": 10.900361442565918}))
    assert cli(["compare"]) == 1
    assert "final_val_loss: 6.125 → 6.5 (5.8e-02 relative: DIFFERS)" in capsys.readouterr().out


def test_metrics_prints_each_file_within_the_width(tmp_path, monkeypatch, capsys):
    """Every metrics file dvc.yaml declares, read through DVC, its numbers in columns no wider
    than asked (at most 120); a file not written yet is named and the exit status is 1."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  a:\n    cmd: 'true'\n    metrics:\n    - metrics/a.json:\n        cache: false\n"
        "  b:\n    cmd: 'true'\n    metrics:\n    - metrics/b.json:\n        cache: false\n"
    )
    (tmp_path / "metrics").mkdir()
    many = {f"metric_number_{i}": i + 0.123456 for i in range(12)}
    (tmp_path / "metrics" / "a.json").write_text(json.dumps({**many, "steps": 150000, "nested": {"loss": 6.1}}))
    monkeypatch.chdir(tmp_path)
    for width, most in ((60, 60), (200, 120)):
        assert cli(["metrics", "--width", str(width)]) == 1
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert lines[0] == "metrics/a.json" and max(map(len, lines)) <= most
        assert "metric_number_11 11.12" in out and "steps 150,000" in out and "nested.loss 6.1" in out
        assert lines[-1].startswith("metrics/b.json: not there")
    (tmp_path / "metrics" / "b.json").write_text(json.dumps({"accuracy": 0.95}))
    assert cli(["metrics"]) == 0
    assert capsys.readouterr().out.endswith("metrics/b.json\n  accuracy 0.95\n")


def test_a_model_dvc_is_rebuilding_is_explained(tmp_path, monkeypatch, capsys):
    """DVC removes a stage's outputs while it reruns the stage: `classify` on the missing folder
    names the DVC process and `dvc checkout`; with no DVC at work it points to `make repro`."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    tmp = tmp_path / ".dvc" / "tmp"
    tmp.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli(["classify", "--model", "models/classifier", "hello"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "models/classifier: no such directory; `make repro` (or `dvc repro`) builds" in err
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        entry = {"pid": sleeper.pid, "cmd": "dvc repro"}
        (tmp / "rwlock").write_text(json.dumps({"write": {str(tmp_path / "models/classifier"): entry}}))
        with pytest.raises(SystemExit):
            cli(["classify", "--model", "models/classifier", "hello"])
    finally:
        sleeper.kill()
        sleeper.wait()
    err = capsys.readouterr().err
    assert f"DVC is at work here (process {sleeper.pid}: dvc repro)" in err
    assert "`dvc checkout models/classifier` brings back the last one built" in err


def test_generate_in_bf16_holds_bf16_weights(language_model, monkeypatch, capsys):
    """--precision bf16: bf16 weights (and KV cache) where the CPU has fast bf16; one line where not."""
    monkeypatch.setattr("scratchgpt.device.cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    seen = []
    real = generation.stream

    def spy(model, prompts, *args, **kwargs):
        seen.append(next(model.parameters()).dtype)
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(generation, "stream", spy)
    args = ["generate", "--model", str(language_model), "--prompt", "Every effort moves you", "--greedy"]
    assert cli([*args, "--max-new-tokens", "8", "--precision", "bf16"]) == 0
    bf16_text = capsys.readouterr().out
    assert cli([*args, "--max-new-tokens", "8"]) == 0
    assert seen == [torch.bfloat16, torch.float32]
    assert bf16_text.startswith("Every effort moves you") and len(bf16_text) > len("Every effort moves you")
    monkeypatch.setattr("scratchgpt.device.cpu_flags", lambda: {"avx2"})
    with pytest.raises(SystemExit) as refused:
        cli([*args, "--precision", "bf16"])
    assert refused.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "precision bf16: this CPU" in err and err.endswith("use fp32 on this device")
