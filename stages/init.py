"""Stage init: the model the finetuning stages start from (params `init.source`) → models/base/."""

from scratchgpt import base, paths, stage
from scratchgpt.config import load_params
from scratchgpt.files import write_json


def main(args: list[str]) -> None:
    stage.no_args(args)
    summary = base.build_base(load_params().init)
    write_json(paths.METRICS / "init.json", summary)


if __name__ == "__main__":
    stage.run(main)
