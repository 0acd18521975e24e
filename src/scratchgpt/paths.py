"""Where the pipeline's artifacts live, relative to the repository root (where DVC runs stages)."""

from pathlib import Path

DATA = Path("data")
RAW = DATA / "raw"  # download@<dataset>: one folder per dataset of params.yaml
SHARDS = DATA / "shards"  # prepare@<corpus>: train.bin, val.bin, meta.json
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
PRETRAINED = MODELS / "pretrained"  # pretrain: the model directory
PRETRAIN_RESUME = MODELS / "pretrained.resume"  # pretrain: the resumable checkpoint (persisted)
BASE = MODELS / "base"  # init: what finetuning starts from
SPAM = DATA / "spam"  # finetune_classifier: train/validation/test CSVs
CLASSIFIER = MODELS / "classifier"
CLASSIFIER_RESUME = MODELS / "classifier.resume"
INSTRUCT_DATA = DATA / "instruct"  # finetune_instruct: train/val/test JSON and test responses
INSTRUCT = MODELS / "instruct"
INSTRUCT_RESUME = MODELS / "instruct.resume"


def raw(dataset: str) -> Path:
    return RAW / dataset


def shards(corpus: str) -> Path:
    return SHARDS / corpus


def rebuild_hint(path: Path) -> str:
    """What to run to rebuild the artifact holding ``path``, for error messages."""
    producers = {PRETRAINED: "pretrain", BASE: "init", CLASSIFIER: "finetune_classifier", INSTRUCT: "finetune_instruct"}
    path = Path(path)
    for folder, stage in producers.items():
        if path == folder or folder in path.parents:
            return f"rerun `dvc repro -f {stage}`"
    if RAW in path.parents:
        return f"rerun `dvc repro -f download@{path.relative_to(RAW).parts[0]}`"
    return "rebuild it"
