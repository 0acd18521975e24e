"""params.yaml validation: every problem named by its full key, before any work is done."""

import copy
import dataclasses
import difflib
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import yaml
from dvc.utils.hydra import apply_overrides
from pydantic import BaseModel

from committed import committed
from scratchgpt.book.model import GPTConfig
from scratchgpt.book.train import TrainConfig
from scratchgpt.plumbing.params import Params, load_params, validate
from scratchgpt.plumbing.params_file import ParamsError, read_yaml
from scratchgpt.plumbing.sections.base import Section
from scratchgpt.plumbing.sections.model import ModelParams
from scratchgpt.plumbing.sections.training import TrainingParams

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base() -> dict:
    return yaml.safe_load((committed("params.yaml")).read_text())


def problems(data: dict) -> list[str]:
    with pytest.raises(ParamsError) as err:
        validate(data)
    return err.value.problems


def with_change(base: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(base)
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def test_repo_params_are_valid():
    params = load_params(committed("params.yaml"))
    assert set(params.download.datasets) >= {"verdict", "spam", "instructions", "gpt2", "wikipedia"}
    assert params.prepare.corpora["verdict"].train_ratio == 0.9
    assert params.download.datasets["spam"].files[0].zip_member == "SMSSpamCollection"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("download.http.connect_timeout", -1, "download.http.connect_timeout: must be > 0, got -1"),
        ("download.http.retries", "three", "download.http.retries: must be an integer, got 'three'"),
        ("download.http.retries", True, "download.http.retries: must be an integer, got true"),
        ("download.http.retries", 2.5, "download.http.retries: must be an integer, got 2.5"),
        ("download.http.retries", 21, "download.http.retries: must be <= 20, got 21"),
        ("download.http.backoff", -0.5, "download.http.backoff: must be >= 0, got -0.5"),
        ("download.http.user_agent", "", "download.http.user_agent: must not be empty"),
        (
            "prepare.corpora.verdict.tokenizer",
            "bpe",
            "prepare.corpora.verdict.tokenizer: must be one of 'gpt2' or 'word', got 'bpe'",
        ),
        ("prepare.corpora.verdict.train_ratio", 1.0, "prepare.corpora.verdict.train_ratio: must be < 1, got 1"),
        ("prepare.corpora.verdict.train_ratio", 0, "prepare.corpora.verdict.train_ratio: must be > 0, got 0"),
        (
            "prepare.corpora.verdict.dataset",
            "verdcit",
            "prepare.corpora.verdict.dataset: unknown dataset 'verdcit', "
            "expected one of: gpt2, instructions, preferences, spam, verdict, wikipedia",
        ),
        ("prepare.bpe_dataset", "GPT2", "prepare.bpe_dataset: must be lowercase letters"),
        ("pretrain.precision", "fp16", "pretrain.precision: must be one of 'fp32' or 'bf16', got 'fp16'"),
        ("dpo.precision", None, "dpo.precision: must be one of 'fp32' or 'bf16', got null"),
        ("evaluate.precision", "BF16", "evaluate.precision: must be one of 'fp32' or 'bf16', got 'BF16'"),
        ("classifier.device", "tpu", "classifier.device: must be one of 'auto', 'cpu', 'cuda' or 'mps', got 'tpu'"),
        ("prepare.corpora", [], "prepare.corpora: must be a mapping, got a list"),
        ("pretrain.launcher", "", "pretrain.launcher: must be 'python', or 'torchrun' and its options"),
        ("init.source", "hf:gpt2", "init.source: a Hub model is hf:<owner>/<name>, e.g. hf:openai-community/gpt2"),
        ("init.source", "gpt2", "init.source: must be one of pretrained, gpt2-124M, gpt2-355M, gpt2-774M, gpt2-1558M"),
        ("init.revision", "main", "init.revision: must be a commit hash (40 lowercase hex digits)"),
        (
            "dpo.launcher",
            "accelerate launch",
            "dpo.launcher: must be 'python', or 'torchrun' and its options (e.g. 'torchrun --standalone "
            "--nproc_per_node 8'), got 'accelerate launch'",
        ),
    ],
)
def test_bad_value_names_key_and_rule(base, key, value, message):
    found = problems(with_change(base, key, value))
    assert any(p.startswith(message) for p in found), found


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("download.http.user_agent", "a" * 513, "download.http.user_agent: must be at most 512 characters, got 513"),
        (
            "download.datasets.verdict.files",
            [{"name": "x" * 1025, "sha256": "0" * 64}],
            "download.datasets.verdict.files[0].name: must be at most 1,024 characters, got 1,025",
        ),
        (
            "download.datasets.wikipedia.mediawiki.api_url",
            "https://" + "w" * 2041,
            "download.datasets.wikipedia.mediawiki.api_url: must be at most 2,048 characters, got 2,049",
        ),
        (
            "download.datasets.wikipedia.mediawiki.titles",
            ["GPT-2", "t" * 256],
            "download.datasets.wikipedia.mediawiki.titles[1]: must be at most 255 characters, got 256",
        ),
        (
            "download.datasets.wikipedia.mediawiki.categories",
            ["Large language models"] * 1001,
            "download.datasets.wikipedia.mediawiki.categories: must have at most 1,000 items, got 1,001",
        ),
        (
            "download.datasets.verdict.files",
            [{"name": "a.txt", "sha256": "0" * 64, "urls": ["https://example.org/a.txt"] * 21}],
            "download.datasets.verdict.files[0].urls: must have at most 20 items, got 21",
        ),
        (
            "pretrain.sample_prompt",
            "p" * 10_001,
            "pretrain.sample_prompt: must be at most 10,000 characters, got 10,001",
        ),
        ("report.attention_text", "a" * 1001, "report.attention_text: must be at most 1,000 characters, got 1,001"),
        ("evaluate.judge_model", "m" * 201, "evaluate.judge_model: must be at most 200 characters, got 201"),
        ("evaluate.judge_api_key_env", "K" * 201, "evaluate.judge_api_key_env: must be at most 200 characters"),
        ("dpo.launcher", "torchrun " + "-" * 1000, "dpo.launcher: must be at most 1,000 characters, got 1,009"),
        ("init.source", "./" + "d" * 4095, "init.source: must be at most 4,096 characters, got 4,097"),
    ],
)
def test_over_long_text_is_refused_naming_the_key(base, key, value, message):
    """Free text has a longest length (lists a longest count too), checked before the key's own
    rules; the message says how long, never quoting the value."""
    found = problems(with_change(base, key, value))
    assert any(p.startswith(message) for p in found), found
    assert all(len(p) < 200 for p in found), found


def test_an_over_long_mapping_key_is_named_by_its_start(base):
    data = copy.deepcopy(base)
    data["download"]["datasets"]["v" * 100_000] = data["download"]["datasets"]["verdict"]
    found = problems(data)
    assert f"download.datasets.{'v' * 40}... (100,000 characters): must be at most 200 characters, got 100,000" in (
        found
    )


def test_unknown_key_suggests_the_close_one(base):
    data = copy.deepcopy(base)
    data["prepare"]["corpora"]["verdict"]["train_ratoi"] = 0.8
    data["download"]["http"]["retires"] = 2
    found = problems(data)
    assert "prepare.corpora.verdict.train_ratoi: unknown key, did you mean train_ratio?" in found
    assert "download.http.retires: unknown key, did you mean retries?" in found


def test_unknown_key_without_close_match_lists_allowed(base):
    found = problems(with_change(base, "prepare.zzz", 1))
    assert found == ["prepare.zzz: unknown key, allowed keys: bpe_dataset, corpora"]


def test_unknown_section(base):
    found = problems(with_change(base, "prepar", {}))
    assert found == ["prepar: unknown key, did you mean prepare?"]


def test_every_problem_is_reported_at_once(base):
    data = with_change(base, "download.http.read_timeout", 0)
    data = with_change(data, "prepare.corpora.wikipedia.documents", "pages")
    found = problems(data)
    assert len(found) == 2
    assert found[0].startswith("download.http.read_timeout: must be > 0")
    assert found[1].startswith("prepare.corpora.wikipedia.documents: must be one of 'file' or 'wikitext'")


def test_list_items_are_named_by_index(base):
    data = copy.deepcopy(base)
    data["download"]["datasets"]["gpt2"]["files"][1]["sha256"] = "abc"
    data["download"]["datasets"]["gpt2"]["files"][0]["urls"][1] = "ftp://x"
    found = problems(data)
    assert "download.datasets.gpt2.files[1].sha256: must be a sha256: 64 lowercase hex digits, got 'abc'" in found
    assert any(p.startswith("download.datasets.gpt2.files[0].urls[1]: must be an https:// URL") for p in found)


def test_missing_required_key(base):
    data = copy.deepcopy(base)
    del data["prepare"]["corpora"]["verdict"]["dataset"]
    assert problems(data) == ["prepare.corpora.verdict.dataset: required key is missing"]


def test_cross_section_rules(base):
    data = copy.deepcopy(base)
    data["download"]["datasets"]["wikipedia"]["source"] = "mediawiki"
    data["download"]["datasets"]["wikipedia"]["mediawiki"] = {"titles": [], "categories": []}
    data["download"]["datasets"]["verdict"]["files"].append(dict(data["download"]["datasets"]["verdict"]["files"][0]))
    found = problems(data)
    assert "download.datasets.wikipedia.mediawiki: give at least one of titles or categories" in found
    assert "download.datasets.verdict.files[1].name: file name 'the-verdict.txt' is already used by files[0]" in found


def test_a_hub_source_needs_a_pinned_revision_and_only_it_has_one(base):
    found = problems(with_change(base, "init.source", "hf:openai-community/gpt2"))
    assert found == ["init.revision: required for the Hub model hf:openai-community/gpt2 (the commit hash to download)"]
    pinned = with_change(base, "init.source", "hf:openai-community/gpt2")
    validate(with_change(pinned, "init.revision", "607a30d783dfa663caf39e06633721c8d4cfcd7e"))  # no error
    found = problems(with_change(base, "init.revision", "607a30d783dfa663caf39e06633721c8d4cfcd7e"))
    assert found == ["init.revision: only for a Hub source (hf:<owner>/<name>), not 'pretrained'"]


def test_rules_between_keys_come_with_the_field_errors(base):
    """A rule that reads only valid sections is reported together with another section's field
    errors; one that reads an invalid section waits for it to be fixed."""
    data = with_change(base, "prepare.corpora.verdict.train_ratio", 0)
    data = with_change(data, "model.n_heads", 5)
    data = with_change(data, "pretrain.corpora", ["verdict", "nosuch"])
    assert problems(data) == [
        "prepare.corpora.verdict.train_ratio: must be > 0, got 0",
        "model.emb_dim: must be divisible by model.n_heads (5), got 192",
    ]


def test_dataset_keys_must_be_folder_names(base):
    data = copy.deepcopy(base)
    data["download"]["datasets"]["Bad Name"] = data["download"]["datasets"]["verdict"]
    found = problems(data)
    assert any(p.startswith("download.datasets.Bad Name: must be lowercase letters") for p in found), found


def test_yaml_floats_as_dvc_reads_them(tmp_path, base):
    text = (committed("params.yaml")).read_text().replace("backoff: 1.0", "backoff: 4e-4")
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").download.http.backoff == pytest.approx(4e-4)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("download:\n  http:\n    retries: [1\nprepare: {}\n")
    with pytest.raises(ParamsError) as err:
        read_yaml(path)
    assert str(path) in str(err.value)
    assert "line 4" in str(err.value)


def test_duplicate_keys_are_errors(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("prepare:\n  bpe_dataset: gpt2\n  bpe_dataset: other\n")
    with pytest.raises(ParamsError, match=r"line 3.*duplicate key 'bpe_dataset' \(first on line 2\)"):
        read_yaml(path)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path / "nope.yaml")


def padded(path: Path, size: int) -> Path:
    """params.yaml followed by a comment that brings the file to ``size`` bytes."""
    text = (committed("params.yaml")).read_bytes() + b"\n# "
    path.write_bytes(text + b"x" * (size - len(text) - 1) + b"\n")
    assert path.stat().st_size == size
    return path


def test_a_params_file_over_1_mib_is_refused_before_parsing(tmp_path, monkeypatch):
    """A 50 MB params.yaml took a minute or two to parse in every stage; now it is one line at once."""
    path = padded(tmp_path / "params.yaml", 52_428_800)

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed")

    monkeypatch.setattr(yaml, "load", no_parsing)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert err.value.problems == ["52,428,800 bytes; params.yaml is capped at 1 MiB (1,048,576 bytes)"]
    assert str(err.value).startswith(f"{path}: 1 problem")


def run_download_stage(folder: Path) -> subprocess.CompletedProcess[str]:
    """download@verdict run in ``folder`` (which holds params.yaml) with the repository's dvc.yaml."""
    (folder / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    env = {**os.environ, "SCRATCHGPT_MIRROR": str(folder / "nowhere")}
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "download.py"), "verdict"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_stage_refuses_a_50_mb_params_file_at_once(tmp_path):
    padded(tmp_path / "params.yaml", 52_428_800)
    run = run_download_stage(tmp_path)
    assert run.returncode == 1
    assert "52,428,800 bytes; params.yaml is capped at 1 MiB (1,048,576 bytes)" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]


def test_a_params_file_of_1_mib_is_read(tmp_path):
    assert load_params(padded(tmp_path / "params.yaml", 1 << 20)).model.n_layers >= 1
    with pytest.raises(ParamsError, match=r"1,048,577 bytes; params.yaml is capped at 1 MiB \(1,048,576 bytes\)"):
        load_params(padded(tmp_path / "params.yaml", (1 << 20) + 1))


def test_a_params_file_that_is_not_utf8_is_one_problem(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"model:\n  n_layers: 4 # \xff\xfe\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert err.value.problems == ["line 2: not UTF-8 text (byte 0xff)"]


def test_stage_fails_before_any_work_with_the_message(tmp_path, base):
    data = with_change(base, "download.http.connect_timeout", -1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    run = run_download_stage(tmp_path)
    assert run.returncode == 1
    assert "download.http.connect_timeout: must be > 0, got -1" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]


def test_stage_rejects_unknown_item(tmp_path):
    (tmp_path / "params.yaml").write_text((committed("params.yaml")).read_text())
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    run = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "prepare.py"), "nosuch"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "prepare@nosuch: not a stage of dvc.yaml; expected prepare@ one of: verdict, wikipedia" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]
    run = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "prepare.py"), "verdict"],
        cwd=tmp_path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr


# --- one source for every default ----------------------------------------------------------

# What each entry of a dict or list states about itself: there a default means "none given" (no
# checksum, no urls, no titles), not a value of the project's that params.yaml could disagree with.
PER_ENTRY = {
    "download.datasets.*.files",
    "download.datasets.*.mediawiki",
    "download.datasets.*.dump",
    "download.datasets.*.files[*].sha256",
    "download.datasets.*.files[*].urls",
    "download.datasets.*.files[*].zip_member",
    "download.datasets.*.files[*].size",
    "download.datasets.*.files[*].max_bytes",
    "download.datasets.*.mediawiki.titles",
    "download.datasets.*.mediawiki.categories",
}


def _plain(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


def _differences(default: Any, value: Any, key: str) -> list[str]:
    """``key: ...`` for each (nested) key where the schema's default and the file's value differ."""
    default, value = _plain(default), _plain(value)
    if isinstance(default, dict) and isinstance(value, dict):
        keys = sorted(default.keys() | value.keys())
        return [d for k in keys for d in _differences(default.get(k), value.get(k), f"{key}.{k}")]
    if default != value or isinstance(default, bool) != isinstance(value, bool):
        return [f"{key}: the schema's default is {default!r}, params.yaml says {value!r}"]
    return []


def default_differences(section: BaseModel, key: str = "", pattern: str = "") -> list[str]:
    """Walk a validated section and the schema together: every key the file states (recursively,
    into nested sections, each entry of a dict or list, and optional sections) whose field has a
    default that differs from the file's value."""
    out = []
    for name, field in type(section).model_fields.items():
        here, generic = f"{key}.{name}" if key else name, f"{pattern}.{name}" if pattern else name
        value = getattr(section, name)
        if name in section.model_fields_set and not field.is_required() and generic not in PER_ENTRY:
            out += _differences(field.get_default(call_default_factory=True, validated_data={}), value, here)
        out += _nested(value, here, generic)
    return out


def _nested(value: Any, key: str, pattern: str) -> list[str]:
    if isinstance(value, BaseModel):
        return default_differences(value, key, pattern)
    if isinstance(value, dict):
        return [d for k, v in value.items() for d in _nested(v, f"{key}.{k}", f"{pattern}.*")]
    if isinstance(value, (list, tuple)):
        return [d for i, v in enumerate(value) for d in _nested(v, f"{key}[{i}]", f"{pattern}[*]")]
    return []


def test_schema_defaults_are_params_yaml_values():
    """params.yaml holds the values: a default the schema keeps (for a key the file may leave out)
    is the file's value wherever the file states that key."""
    found = list(dict.fromkeys(default_differences(load_params(committed("params.yaml")))))
    assert not found, "schema defaults that differ from params.yaml:\n" + "\n".join(found)


def test_the_default_comparison_can_fail():
    class Inner(Section):
        a: int = 1
        urls: list[str] = []

    class Outer(Section):
        flag: bool = False
        inner: Inner = Inner()
        entries: dict[str, Inner]
        maybe: Inner | None = None

    data = {
        "flag": 0 == 1,
        "inner": {"a": 2},
        "entries": {"x": {"a": 1, "urls": ["u"]}, "y": {"a": 3}},
        "maybe": {"a": 4},
    }
    assert list(dict.fromkeys(default_differences(Outer.model_validate(data)))) == [
        "inner.a: the schema's default is 1, params.yaml says 2",
        "entries.x.urls: the schema's default is [], params.yaml says ['u']",
        "entries.y.a: the schema's default is 1, params.yaml says 3",
        "maybe: the schema's default is None, params.yaml says {'a': 4, 'urls': []}",
        "maybe.a: the schema's default is 1, params.yaml says 4",
    ]


TRAINING_SECTIONS = ("pretrain", "classifier", "instruct", "dpo")


def defaulted(model: type[BaseModel], key: str) -> list[str]:
    """Dotted keys of ``model`` (and of the sections nested in it) that have a default."""
    out = []
    for name, field in model.model_fields.items():
        if not field.is_required():
            out.append(f"{key}.{name}")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += defaulted(field.annotation, f"{key}.{name}")
    return out


def test_training_sections_have_no_defaults():
    """pretrain, classifier and instruct differ from each other, and params.yaml states each in
    full: a default in the schema could only be a second, different source of a value."""
    found = [k for name in TRAINING_SECTIONS for k in defaulted(Params.model_fields[name].annotation, name)]
    assert not found, f"training-section keys with a default: {', '.join(found)}"


def test_the_no_default_check_can_fail():
    class Inner(Section):
        rank: int = 16

    class Probe(Section):
        lr: float
        inner: Inner

    assert defaulted(Probe, "probe") == ["probe.inner.rank"]


def test_training_keys_and_bounds_come_from_train_config():
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(TrainingParams.model_fields) == [*names, "device", "launcher"]
    for name in names:
        field, hint = TrainingParams.model_fields[name], hints[name]
        bounds = list(typing.get_args(hint)[1:]) if typing.get_origin(hint) is typing.Annotated else []
        assert field.metadata == bounds, name
        assert field.is_required(), name
    for name in TRAINING_SECTIONS:
        assert issubclass(Params.model_fields[name].annotation, TrainingParams), name
    params = load_params(committed("params.yaml"))
    assert TrainConfig.from_params(params.classifier).lr == params.classifier.lr


# ---------------------------------------------------------------------------------------------
# Lengths bounded by the context they feed; the model's bounds agree with GPTConfig's


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classifier.max_length": 100000}, "classifier.max_length: must be <= model.context_length (128, "),
        ({"classifier.max_length": 2**20 + 1}, "classifier.max_length: must be <= 1048576"),
        ({"instruct.allowed_max_length": 2**20 + 1}, "instruct.allowed_max_length: must be <= 1048576"),
        ({"dpo.allowed_max_length": 2**20 + 1}, "dpo.allowed_max_length: must be <= 1048576"),
        ({"dpo.beta": 0}, "dpo.beta: must be > 0"),
        ({"pretrain.stride": 129}, "pretrain.stride: must be <= model.context_length (128), got 129"),
        ({"pretrain.max_length": 129}, "pretrain.max_length: must be <= model.context_length (128), got 129"),
        ({"model.context_length": 2**20 + 1}, "model.context_length: must be <= 1048576"),
        ({"model.vocab_size": 2**22 + 1}, "model.vocab_size: must be <= 4194304"),
    ],
)
def test_lengths_are_bounded_by_the_context_they_feed(base, changes, message):
    data = base
    for key, value in changes.items():
        data = with_change(data, key, value)
    found = problems(data)
    assert any(p.startswith(message) for p in found), found


def test_dpo_adapters_need_an_instruction_model_with_its_own_weights(base):
    data = base
    for key, value in {"instruct.method": "lora", "instruct.lora.save": "adapters", "dpo.method": "lora"}.items():
        data = with_change(data, key, value)
    validate(data)  # instruct's adapters under a merged DPO model: fine
    found = problems(with_change(data, "dpo.lora.save", "adapters"))
    assert found == [
        "dpo.lora.save: adapters must sit beside a model with its own weights, but models/instruct holds adapters "
        "too (instruct.lora.save: adapters); save one of them merged"
    ]


def test_the_preference_data_is_required(base):
    data = {**base, "download": {**base["download"], "datasets": dict(base["download"]["datasets"])}}
    del data["download"]["datasets"]["preferences"]
    assert "download.datasets.preferences: required key is missing (stage finetune_dpo reads it)" in problems(data)


def test_classifier_length_of_another_source_is_left_to_the_stage(base):
    """The context of an OpenAI or folder source is known once the model is: the stage checks it."""
    data = with_change(with_change(base, "classifier.max_length", 1024), "init.source", "gpt2-124M")
    validate(data)
    assert any(p.startswith("classifier.max_length") for p in problems(with_change(data, "init.source", "pretrained")))


def test_model_params_bounds_agree_with_gpt_config():
    """params' model section and GPTConfig take the same values: for each integer key, the bounds
    of one are the bounds of the other (checked at each bound and one past it), and drop_rate's."""
    good = {"vocab_size": 64, "context_length": 16, "emb_dim": 32, "n_heads": 1, "n_layers": 2}
    checked = []
    for name, field in ModelParams.model_fields.items():
        if field.annotation is not int:
            continue
        low = next(m.ge for m in field.metadata if isinstance(m, at.Ge))
        high = next((m.le for m in field.metadata if isinstance(m, at.Le)), None)
        cases = [(low, True), (low - 1, False)] + ([(high, True), (high + 1, False)] if high else [])
        for value, valid in cases:
            assert accepts(GPTConfig, {**good, name: value}) == valid, (name, value)
        checked.append(name)
    assert sorted(checked) == sorted(good)
    for value, valid in ((0.0, True), (0.99, True), (1.0, False), (-0.01, False)):
        assert accepts(GPTConfig, {**good, "drop_rate": value}) == valid, value


def accepts(cls, fields: dict) -> bool:
    try:
        cls(**fields)
    except ValueError:
        return False
    return True


def test_a_dump_source_needs_its_dump_and_a_dated_one(base):
    data = with_change(base, "download.datasets.wikipedia.source", "dump")
    validate(data)  # params.yaml names a dated dump
    del data["download"]["datasets"]["wikipedia"]["dump"]
    assert "download.datasets.wikipedia.dump: required when source is 'dump'" in problems(data)
    latest = with_change(base, "download.datasets.wikipedia.dump.date", "latest")
    assert any(p.startswith("download.datasets.wikipedia.dump.date:") for p in problems(latest))


@pytest.mark.parametrize(
    "override", ["classifier.lr=3e-4", "init.revision=" + "a" * 40, "pretrain.epochs=2", "pretrain.corpora=[verdict]"]
)
def test_a_dvc_set_param_changes_one_line_of_params_yaml(tmp_path, override):
    """params.yaml is written as `dvc exp run -S` writes it back (DVC's apply_overrides: block
    lists, no comment on a list item's keys), so an experiment's one change is a one-line diff,
    comments and all."""
    path = tmp_path / "params.yaml"
    shutil.copy(committed("params.yaml"), path)
    before = path.read_text().splitlines()
    apply_overrides(str(path), [override])
    after = path.read_text().splitlines()
    diff = list(difflib.unified_diff(before, after, lineterm="", n=0))[2:]
    removed = [line for line in diff if line.startswith("-")]
    added = [line for line in diff if line.startswith("+")]
    assert len(removed) == 1 and len(added) <= 1, diff  # one value: its line (or one list item) changed
