"""Stage pretrain: train the GPT of params `model` on the shards of params `pretrain.corpora`.

Writes models/pretrained/ (config.json, model.safetensors, tokenizer/), the resumable checkpoint
models/pretrained.resume/, DVCLive metrics and curves under metrics/pretrain/ and the book-style
loss figure plots/pretrain/loss.png. Run it alone or with `torchrun --nproc_per_node N`.
"""

from scratchgpt import pretrain, stage
from scratchgpt.config import load_params


def main(args: list[str]) -> None:
    stage.no_args(args)
    pretrain.run(load_params())


if __name__ == "__main__":
    stage.run(main)
