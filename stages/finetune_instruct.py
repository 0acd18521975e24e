"""Stage finetune_instruct (chapter 7): split instruction-data.json into data/instruct/, finetune
models/base into models/instruct/, answer the test split (data/instruct/test-responses.json),
with DVCLive metrics under metrics/instruct/ and the loss figure plots/instruct/loss.png."""

from scratchgpt import instruct, stage


def main(st: stage.Stage) -> None:
    instruct.run(st)


if __name__ == "__main__":
    stage.run(main)
