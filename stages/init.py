"""Stage init: the model the finetuning stages start from (params `init.source`) → models/base/."""

from scratchgpt import base, paths, stage
from scratchgpt.files import write_json


def main(st: stage.Stage) -> None:
    summary = base.build_base(st.params.init, st.out(paths.BASE))
    write_json(st.out(paths.METRICS / "init.json"), summary)


if __name__ == "__main__":
    stage.run(main)
