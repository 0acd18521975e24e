"""Stage download@<dataset>: fetch one dataset of params.yaml into data/raw/<dataset>/.

Each source is its own module, and this is the one place that picks it. Files (source: files,
scratchgpt.plumbing.download) are tried in order (params URLs, then $SCRATCHGPT_MIRROR); every file
is sha256-checked and the folder appears complete or not at all. A MediaWiki site (source:
mediawiki) is scraped through its API (scratchgpt.plumbing.wikipedia). A Wikipedia dump (source:
dump) is downloaded into the cache, checked against its sha1sums file and extracted there
(scratchgpt.plumbing.wikidump); the folder receives its JSONL shards and their manifest.
"""

from scratchgpt.plumbing import paths, stage, wikidump, wikipedia
from scratchgpt.plumbing.download import fetch_dataset, mirror_from_env
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import DownloadParams


def main(st: stage.Stage) -> None:
    name, download = st.key, st.params.download
    folder, dataset, client = paths.raw(name), download.datasets[name], HttpClient(download.http)
    if dataset.source == "dump":  # Wikimedia's dump: the big files stay in the cache, shards come here
        report = wikidump.build_dataset(dataset.dump, st.out(folder), client, mirror_from_env(), paths.cache_dir())
    elif dataset.source == "mediawiki":
        assert dataset.mediawiki is not None  # params: required with this source
        report = wikipedia.build_dataset(dataset.mediawiki, st.out(folder), client)
    else:
        report = fetch_dataset(name, dataset, st.out(folder), client, mirror_from_env(), reuse=folder)
    for file, source in report.items():
        print(f"{folder / file}: {source}")


if __name__ == "__main__":
    stage.run(main, DownloadParams)
