"""Stage evaluate (chapters 6–7): test-split scores of both finetuned models → metrics/evaluate.json
(classifier accuracy, precision, recall, F1; instruction test loss, perplexity, ROUGE-L, exact
match and, when evaluate.judge_url names an Ollama-compatible server, the judge's mean score)."""

from scratchgpt import evaluate, stage


def main(st: stage.Stage) -> None:
    metrics = evaluate.run(st)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    stage.run(main)
