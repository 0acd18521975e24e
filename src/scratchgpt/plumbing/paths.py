"""Where the pipeline's artifacts live, relative to the repository root (where DVC runs stages),
and the per-user cache outside it."""

import os
from pathlib import Path

DATA = Path("data")
RAW = DATA / "raw"  # download@<dataset>: one folder per dataset of params.yaml
SHARDS = DATA / "shards"  # prepare@<corpus>: train.bin, val.bin, meta.json
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
PRETRAINED = MODELS / "pretrained"  # pretrain: the model directory
BASE = MODELS / "base"  # init: what finetuning starts from
SPAM = DATA / "spam"  # finetune_classifier: train/validation/test CSVs
CLASSIFIER = MODELS / "classifier"
INSTRUCT_DATA = DATA / "instruct"  # finetune_instruct: train/val/test JSON and test responses
INSTRUCT = MODELS / "instruct"
DPO_DATA = DATA / "dpo"  # finetune_dpo: the preference splits and the test responses
DPO = MODELS / "dpo"
EVALUATE_DATA = DATA / "evaluate"  # evaluate: per-response scores
REPORT = Path("report")

CACHE_ENV = "SCRATCHGPT_CACHE"


def cache_dir() -> Path:
    """What is kept between runs outside DVC's outputs and git: downloaded OpenAI checkpoints,
    training resume state. ``$SCRATCHGPT_CACHE``, default ``~/.cache/scratchgpt``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scratchgpt")


def raw(dataset: str) -> Path:
    return RAW / dataset


def shards(corpus: str) -> Path:
    return SHARDS / corpus


def rebuild_hint(path: Path) -> str:
    """What to run to rebuild the artifact holding ``path``, for error messages."""
    producers = {
        PRETRAINED: "pretrain",
        BASE: "init",
        CLASSIFIER: "finetune_classifier",
        INSTRUCT: "finetune_instruct",
        DPO: "finetune_dpo",
    }
    path = Path(path)
    for folder, stage in producers.items():
        if path == folder or folder in path.parents:
            return f"rerun `dvc repro -f {stage}`"
    if RAW in path.parents:
        return f"rerun `dvc repro -f download@{path.relative_to(RAW).parts[0]}`"
    return "rebuild it"
