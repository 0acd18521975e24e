"""Stage download@<dataset>: fetch one dataset of params.yaml into data/raw/<dataset>/.

Each source is its own module of :mod:`scratchgpt.plumbing.sources`, imported when a dataset
names it, and a dep of that dataset's stage alone (dvc.yaml: ``sources/${item.source}.py``).
Files (source: files) are tried in order (params URLs, then $SCRATCHGPT_MIRROR); every file is
sha256-checked and the folder appears complete or not at all. A MediaWiki site (source:
mediawiki) is scraped through its API. A Wikipedia dump (source: dump) is downloaded into the
cache, checked against its sha1sums file and extracted there; the folder receives its JSONL
shards and their manifest.
"""

import importlib

from scratchgpt.plumbing import paths, sources, stage
from scratchgpt.plumbing.download import mirror_from_env
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import DownloadParams


def main(st: stage.Stage) -> None:
    name, download = st.key, st.params.download
    folder, dataset, client = paths.raw(name), download.datasets[name], HttpClient(download.http)
    source = importlib.import_module(f"{sources.__name__}.{dataset.source}")
    report = source.fetch(name, dataset, st.out(folder), client, mirror_from_env(), reuse=folder)
    for file, where in report.items():
        print(f"{folder / file}: {where}")


if __name__ == "__main__":
    stage.run(main, DownloadParams)
