"""Instruction finetuning (scratchgpt.book.instruct): the book's split, prompt format and collate;
bad entries; the response read back from the generated text."""

import json

import pytest

from scratchgpt.book import instruct
from scratchgpt.book.instruct import (
    Collate,
    EntryError,
    format_example,
    format_input,
    load_entries,
    split_entries,
)
from scratchgpt.book.tokenizer import GPT2Tokenizer

ENTRY = {
    "instruction": "Rewrite the sentence using a simile.",
    "input": "The car is very fast.",
    "output": "The car is as fast as lightning.",
}


def test_split_of_the_real_file_is_the_books(mirror):
    entries = load_entries(mirror / "instruction-data.json")
    assert len(entries) == 1100
    train, val, test = split_entries(entries)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    assert train[0] == entries[0] and test[0] == entries[935] and val[0] == entries[1045]
    shuffled = split_entries(entries, shuffle=True, seed=1)
    assert sorted(map(json.dumps, shuffled[0] + shuffled[1] + shuffled[2])) == sorted(map(json.dumps, entries))
    assert shuffled[2] != test


def test_prompt_format():
    assert format_input(ENTRY) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nRewrite the sentence using a simile.\n\n### Input:\nThe car is very fast."
    )
    assert format_example(ENTRY).endswith("\n\n### Response:\nThe car is as fast as lightning.")
    no_input = {**ENTRY, "input": ""}
    assert "### Input" not in format_input(no_input)
    assert format_input(no_input).endswith("### Instruction:\nRewrite the sentence using a simile.")


@pytest.mark.parametrize(
    "data, message",
    [
        ([ENTRY, {"instruction": "x", "input": ""}], "entry 1: missing key 'output'"),
        ([ENTRY, ENTRY, {"instruction": "x", "input": 3, "output": "y"}], "entry 2: 'input' must be a string, got int"),
        ([ENTRY, "text"], "entry 1: expected an object, got str"),
        ({"entries": []}, "expected a JSON list of entries, got dict"),
    ],
)
def test_malformed_entries_are_named(tmp_path, data, message):
    path = tmp_path / "instruction-data.json"
    path.write_text(json.dumps(data))
    with pytest.raises(EntryError, match=message):
        load_entries(path)


def test_bad_json_is_located(tmp_path):
    (tmp_path / "i.json").write_text('[{"instruction": "a",\n "input": }]')
    with pytest.raises(EntryError, match=r"i.json: not valid JSON \(line 2, column"):
        load_entries(tmp_path / "i.json")


def test_collate_on_a_hand_made_batch():
    batch = [([0, 1, 2, 3, 4], 2), ([5, 6], 1), ([7, 8, 9], 2)]
    x, y = Collate(pad_id=50256)(batch)
    P, M = 50256, -100  # padding, masked target
    assert x.tolist() == [[0, 1, 2, 3, 4], [5, 6, P, P, P], [7, 8, 9, P, P]]
    assert y.tolist() == [[1, 2, 3, 4, P], [6, P, M, M, M], [8, 9, P, M, M]]
    x, y = Collate(pad_id=50256, mask_prompt=True)(batch)
    assert y.tolist() == [[M, 2, 3, 4, P], [6, P, M, M, M], [M, 9, P, M, M]]
    x, y = Collate(pad_id=50256, allowed_max_length=3)(batch)
    assert x.tolist() == [[0, 1, 2], [5, 6, P], [7, 8, 9]]
    assert y.tolist() == [[1, 2, 3], [6, P, M], [8, 9, P]]


def test_prompt_ids_are_a_prefix_of_the_example_ids(mirror):
    tok = GPT2Tokenizer(mirror / "gpt2")
    for entry in load_entries(mirror / "instruction-data.json")[:200]:
        prompt = tok.encode(format_input(entry), allow_special=False)
        assert tok.encode(format_example(entry), allow_special=False)[: len(prompt)] == prompt


def test_extract_response():
    assert instruct.extract_response("\n\n### Response:\nThe car is as fast as lightning. ") == (
        "The car is as fast as lightning."
    )
