"""Stage pretrain: train the GPT of params `model` on the shards of params `pretrain.corpora`.

Writes models/pretrained/ (config.json, model.safetensors, tokenizer/), DVCLive metrics and
curves under metrics/pretrain/ and the book-style loss figure plots/pretrain/loss.png; resume
checkpoints go to the cache (scratchgpt.resume). Run it alone or with `torchrun --nproc_per_node N`.
"""

from scratchgpt import pretrain, stage


def main(st: stage.Stage) -> None:
    pretrain.run(st)


if __name__ == "__main__":
    stage.run(main)
