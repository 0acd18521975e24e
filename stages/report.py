"""Stage report: report/index.html (self-contained) and report/summary.md with every metric, the
figures, sample generations, an attention heat map and our numbers beside the book's, each row
marked like for like or not from the run's settings (the sections it declares besides report)."""

from scratchgpt.plumbing import paths, report, stage
from scratchgpt.plumbing.sections.classifier import ClassifierParams
from scratchgpt.plumbing.sections.dpo import DPOParams
from scratchgpt.plumbing.sections.init import InitParams
from scratchgpt.plumbing.sections.instruct import InstructParams
from scratchgpt.plumbing.sections.model import ModelParams
from scratchgpt.plumbing.sections.pretrain import PretrainParams
from scratchgpt.plumbing.sections.report import ReportParams


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
    stage.run(main, ReportParams, ModelParams, PretrainParams, InitParams, ClassifierParams, InstructParams, DPOParams)
