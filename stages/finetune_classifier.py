"""Stage finetune_classifier (chapter 6): split the SMS Spam Collection into data/spam/, finetune
models/base into the spam classifier models/classifier/, with DVCLive metrics under
metrics/classifier/ (accuracy, precision, recall, F1 per split; test confusion matrix) and the
book's loss and accuracy figures under plots/classifier/."""

from scratchgpt import classify, stage


def main(st: stage.Stage) -> None:
    classify.run(st)


if __name__ == "__main__":
    stage.run(main)
