"""Stage download@<dataset>: fetch one dataset of params.yaml into data/raw/<dataset>/.

Sources are tried in order (params URLs, then $SCRATCHGPT_MIRROR); every file is sha256-checked
and the folder appears complete or not at all.
"""

from scratchgpt import paths, stage
from scratchgpt.config import load_params
from scratchgpt.download import HttpClient, fetch_dataset, mirror_from_env


def main(args: list[str]) -> None:
    name = stage.one_arg(args, "dataset")
    params = load_params()
    dataset = stage.pick(params.download.datasets, name, "download.datasets")
    report = fetch_dataset(name, dataset, paths.raw(name), HttpClient(params.download.http), mirror_from_env())
    for file, source in report.items():
        print(f"{paths.raw(name) / file}: {source}")


if __name__ == "__main__":
    stage.run(main)
