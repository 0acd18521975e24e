"""Stage finetune_instruct (chapter 7): split instruction-data.json into data/instruct/, finetune
models/base into models/instruct/, answer the test split (data/instruct/test-responses.json),
with DVCLive metrics under metrics/instruct/ and the loss figure plots/instruct/loss.png."""

from scratchgpt import instruct, stage
from scratchgpt.config import load_params


def main(args: list[str]) -> None:
    stage.no_args(args)
    instruct.run(load_params())


if __name__ == "__main__":
    stage.run(main)
