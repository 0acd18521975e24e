"""Stage report: report/index.html (self-contained) and report/summary.md with every metric, the
figures, sample generations, an attention heat map and our numbers beside the book's."""

from scratchgpt import report, stage
from scratchgpt.config import load_params


def main(args: list[str]) -> None:
    stage.no_args(args)
    p = load_params().report
    print(report.build(attention_text=p.attention_text, samples=p.samples))


if __name__ == "__main__":
    stage.run(main)
