"""Stage download@<dataset>: fetch one dataset of params.yaml into data/raw/<dataset>/.

Sources are tried in order (params URLs, then $SCRATCHGPT_MIRROR); every file is sha256-checked
and the folder appears complete or not at all.
"""

from scratchgpt.plumbing import paths, stage
from scratchgpt.plumbing.download import fetch_dataset, mirror_from_env
from scratchgpt.plumbing.http import HttpClient


def main(st: stage.Stage) -> None:
    name, download = st.key, st.params.download
    folder = paths.raw(name)
    report = fetch_dataset(
        name, download.datasets[name], st.out(folder), HttpClient(download.http), mirror_from_env(), reuse=folder
    )
    for file, source in report.items():
        print(f"{folder / file}: {source}")


if __name__ == "__main__":
    stage.run(main)
