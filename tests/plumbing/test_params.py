"""params.yaml validation: every problem named by its full key, before any work is done."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scratchgpt.plumbing.params import ParamsError, load_params, read_yaml, validate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


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
    params = load_params(ROOT / "params.yaml")
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
            "prepare.corpora.verdict.dataset: unknown dataset 'verdcit', expected one of: gpt2, instructions, spam, verdict, wikipedia",
        ),
        ("prepare.bpe_dataset", "GPT2", "prepare.bpe_dataset: must be lowercase letters"),
        ("prepare.corpora", [], "prepare.corpora: must be a mapping, got a list"),
    ],
)
def test_bad_value_names_key_and_rule(base, key, value, message):
    found = problems(with_change(base, key, value))
    assert any(p.startswith(message) for p in found), found


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
    assert (
        "download.datasets.verdict.files[1].name: file name 'the-verdict.txt' is already used by files[0]" in found
    )


def test_dataset_keys_must_be_folder_names(base):
    data = copy.deepcopy(base)
    data["download"]["datasets"]["Bad Name"] = data["download"]["datasets"]["verdict"]
    found = problems(data)
    assert any(p.startswith("download.datasets.Bad Name: must be lowercase letters") for p in found), found


def test_yaml_floats_as_dvc_reads_them(tmp_path, base):
    text = (ROOT / "params.yaml").read_text().replace("backoff: 1.0", "backoff: 4e-4")
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


def test_stage_fails_before_any_work_with_the_message(tmp_path, base):
    data = with_change(base, "download.http.connect_timeout", -1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    env = {**os.environ, "SCRATCHGPT_MIRROR": str(tmp_path / "nowhere")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "download.py"), "verdict"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "download.http.connect_timeout: must be > 0, got -1" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]


def test_stage_rejects_unknown_item(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    run = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "prepare.py"), "nosuch"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "prepare@nosuch: not a stage of dvc.yaml; expected prepare@ one of: verdict, wikipedia" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]
    run = subprocess.run([sys.executable, str(ROOT / "stages" / "prepare.py"), "verdict"], cwd=tmp_path.parent,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr
