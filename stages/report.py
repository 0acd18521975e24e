"""Stage report: report/index.html (self-contained) and report/summary.md with every metric, the
figures, sample generations, an attention heat map and our numbers beside the book's, each row
marked like for like or not from the run's settings (the sections it declares besides report)."""

from scratchgpt.plumbing import paths, report, stage


def main(st: stage.Stage) -> None:
    p = st.params.report
    report.build(
        st.out(paths.REPORT),
        attention_text=p.attention_text,
        samples=p.samples,
        settings=lambda key: report.lookup(st.params, key),
    )
    print(paths.REPORT / "index.html")


if __name__ == "__main__":
    stage.run(main)
