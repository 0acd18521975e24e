"""Stage report: report/index.html (self-contained) and report/summary.md with every metric, the
figures, sample generations, an attention heat map and our numbers beside the book's, each row
marked like for like or not from the run's settings (the sections it declares besides report).

The steps are here; the tables, HTML and Markdown are :mod:`scratchgpt.plumbing.report`, the
figures :mod:`scratchgpt.plumbing.results` and :mod:`scratchgpt.plumbing.plots`."""

import os
from pathlib import Path
from typing import Any

from scratchgpt.files import atomic_dir, write_text
from scratchgpt.plumbing import paths, report, results, stage
from scratchgpt.plumbing.report import CH05_ALSO, CH05_FIGURE, CHAPTERS, FIGURES, MISSING, Settings
from scratchgpt.plumbing.sections.classifier import ClassifierParams
from scratchgpt.plumbing.sections.dpo import DPOParams
from scratchgpt.plumbing.sections.init import InitParams
from scratchgpt.plumbing.sections.instruct import InstructParams
from scratchgpt.plumbing.sections.model import ModelParams
from scratchgpt.plumbing.sections.pretrain import PretrainParams
from scratchgpt.plumbing.sections.report import ReportParams


def figures(data: dict[str, Any], folder: Path, attention_text: str) -> list[tuple[str, Path]]:
    """The pipeline's figures that exist, chapter 5 against the book's points first (once
    book-ch05 is snapshotted) and the attention map last; the last two are drawn into ``folder``."""
    found = [(caption, path) for caption, path in FIGURES if path.is_file()]
    ch05 = data["experiments"].get("book-ch05")
    if ch05 is not None:
        caption = "Chapter 5 reproduced: experiment book-ch05's losses (lines), the book's printed points (markers)"
        others = [snap for name, snap in data["experiments"].items() if name in CH05_ALSO and snap is not None]
        if others:
            caption += "; thin lines: " + ", ".join(f"experiment {s['experiment']}" for s in others)
        found.insert(0, (caption, results.ch05_figure(ch05, folder / CH05_FIGURE, others)))
    caption = report.attention_figure(paths.PRETRAINED, attention_text, folder / "attention.png")
    if caption is not None:
        found.append((caption, folder / "attention.png"))
    return found


def build(
    out_dir: str | os.PathLike[str] = paths.REPORT,
    attention_text: str = "Every effort moves you",
    samples: int = 3,
    settings: Settings | None = None,
) -> Path:
    """Write index.html, summary.md, attention.png (and book-ch05-loss.png once book-ch05 is
    snapshotted) into ``out_dir`` (replaced whole). ``settings`` gives the default run's value
    of a dotted params key (the stage passes its declared params)."""
    out_dir = Path(out_dir)
    data = report.collect([c.experiment for c in CHAPTERS] + list(CH05_ALSO))
    rows = report.comparison(data, settings or (lambda key: MISSING))
    with atomic_dir(out_dir) as staging:
        shown = figures(data, staging, attention_text)
        write_text(staging / "index.html", report.render_html(data, rows, shown, samples))
        write_text(staging / "summary.md", report.render_markdown(data, rows))
    return out_dir / "index.html"


def main(st: stage.Stage) -> None:
    p = st.params.report
    build(st.out(paths.REPORT), p.attention_text, p.samples, settings=lambda key: report.lookup(st.params, key))
    print(paths.REPORT / "index.html")


if __name__ == "__main__":
    stage.run(main, ReportParams, ModelParams, PretrainParams, InitParams, ClassifierParams, InstructParams, DPOParams)
