"""Where the pipeline's artifacts live, relative to the repository root (where DVC runs stages)."""

from pathlib import Path

RAW = Path("data/raw")  # download@<dataset>: one folder per dataset of params.yaml
SHARDS = Path("data/shards")  # prepare@<corpus>: train.bin, val.bin, meta.json
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
PRETRAINED = MODELS / "pretrained"  # pretrain: the model directory
PRETRAIN_RESUME = MODELS / "pretrained.resume"  # pretrain: the resumable checkpoint (persisted)
BASE = MODELS / "base"  # init: what finetuning starts from
SPAM = Path("data/spam")  # finetune_classifier: train/validation/test CSVs
CLASSIFIER = MODELS / "classifier"
CLASSIFIER_RESUME = MODELS / "classifier.resume"


def raw(dataset: str) -> Path:
    return RAW / dataset


def shards(corpus: str) -> Path:
    return SHARDS / corpus
