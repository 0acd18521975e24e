"""params.yaml's ``download`` section: how downloads talk to servers, and every dataset with its
source (files, a MediaWiki site or a Wikimedia dump)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from scratchgpt.plumbing.sections.base import Key, RelPath, Section, Sha256, Url

DAY = 24 * 3600
GIB = 1 << 30
TIB = 1 << 40
MAX_URLS = 20  # a file's sources
MAX_TITLES = 1_000  # MediaWiki titles, categories or section headings

WikiTitle = Annotated[str, StringConstraints(max_length=255)]  # MediaWiki's own limit (255 bytes)
Titles = Annotated[list[WikiTitle], Field(max_length=MAX_TITLES)]


class HttpParams(Section):
    """How downloads talk to servers; every key is optional (the defaults are params.yaml's)."""

    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    retries: int = Field(3, ge=0, le=20)
    backoff: float = Field(1.0, ge=0)
    max_backoff: float = Field(60.0, ge=0)
    total_timeout: float = Field(1800.0, gt=0, le=DAY)  # one file from one source, retries included
    max_bytes: int = Field(2 * GIB, ge=1, le=TIB)  # a file without a declared size may not pass this
    user_agent: str = Field(
        "scratchgpt/0.1 (educational LLM pipeline; https://github.com/scratchgpt/scratchgpt)",
        min_length=1,
        max_length=512,
    )


class FileParams(Section):
    """One file of a dataset: where to find it and what it must hash to."""

    name: RelPath
    sha256: Sha256 | None = None  # required for the download stage's datasets
    urls: list[Url] = Field([], max_length=MAX_URLS)
    zip_member: RelPath | None = None
    size: int | None = Field(None, ge=0, le=TIB)  # exact bytes; also the transfer's cap
    max_bytes: int | None = Field(None, ge=1, le=TIB)  # the cap without a size, or a zip's (else download.http's)


class MediaWikiParams(Section):
    """A dataset scraped from a MediaWiki API (used when a dataset's source is mediawiki)."""

    api_url: Url = "https://en.wikipedia.org/w/api.php"
    titles: Titles = []
    categories: Titles = []
    max_articles: int = Field(50, ge=1)
    min_interval: float = Field(1.0, ge=0)
    min_chars: int = Field(200, ge=0)
    drop_sections: Titles = [
        "See also",
        "Notes",
        "References",
        "Citations",
        "Sources",
        "Bibliography",
        "Further reading",
        "External links",
    ]


class DumpParams(Section):
    """Wikipedia from one of Wikimedia's dated multistream dumps (used when a dataset's source is
    dump): downloaded into the cache, checked against the dump's own sha1sums file, extracted into
    JSONL shards (scratchgpt.plumbing.sources.dump)."""

    wiki: Key  # simplewiki, enwiki, dewiki ...
    date: Annotated[str, Field(pattern=r"^[0-9]{8}$")]  # a dated dump (YYYYMMDD), never "latest"
    base_url: Url = "https://dumps.wikimedia.org"
    sha1sums_sha256: Sha256 | None = None  # pin the checksum file too (else it is trusted as served)
    max_bytes: int = Field(64 * GIB, ge=1, le=TIB)  # the dump file's cap (English: about 24 GB)
    min_chars: int = Field(200, ge=0)  # shorter articles (after cleaning) are left out
    max_articles: int | None = Field(None, ge=1)  # a sample: the first articles in dump order
    max_text_bytes: int | None = Field(None, ge=1)  # or the first this many bytes of text
    streams_per_shard: int = Field(50, ge=1)  # bz2 streams (up to 100 pages each) per output shard
    workers: int = Field(0, ge=0)  # processes (0: every core)
    # a stream's decompressed cap (real ones: a few MB); past it the dump is refused, never expanded further
    max_stream_bytes: int = Field(128 << 20, ge=1 << 20, le=4 * GIB)
    # a page's XML cap (the largest real articles: 1-2 MB); a larger one is skipped unparsed and listed
    max_page_bytes: int = Field(8 << 20, ge=1 << 10, le=GIB)


class DatasetParams(Section):
    """One dataset (data/raw/<key>/): a list of files, articles from a MediaWiki, or a dump."""

    # params.yaml names it for every dataset: dvc.yaml's deps of download@<key> hold the module of
    # its source (scratchgpt.plumbing.sources.<source>); code that builds a dataset may leave it out
    source: Literal["files", "mediawiki", "dump"] = "files"
    files: list[FileParams] = []
    mediawiki: MediaWikiParams | None = None
    dump: DumpParams | None = None

    def problems(self, where: str) -> list[str]:
        """What this dataset lacks for its source, each under ``where`` (its full key)."""
        problems = []
        if "source" not in self.model_fields_set:
            problems.append(f"{where}.source: required key is missing (files, mediawiki or dump: dvc.yaml reads it)")
        if self.source == "files" and not self.files:
            problems.append(f"{where}.files: must list at least one file when source is 'files'")
        if self.source == "mediawiki" and self.mediawiki is None:
            problems.append(f"{where}.mediawiki: required when source is 'mediawiki'")
        if self.source == "dump" and self.dump is None:
            problems.append(f"{where}.dump: required when source is 'dump'")
        if self.source == "mediawiki" and self.mediawiki and not (self.mediawiki.titles or self.mediawiki.categories):
            problems.append(f"{where}.mediawiki: give at least one of titles or categories")
        seen: dict[str, int] = {}
        for i, f in enumerate(self.files):
            if f.sha256 is None:
                problems.append(f"{where}.files[{i}].sha256: required key is missing")
            base = PurePosixPath(f.name).name
            if base in seen:
                problems.append(f"{where}.files[{i}].name: file name {base!r} is already used by files[{seen[base]}]")
            seen[base] = i
        return problems


# The datasets a stage reads by name, and the stage.
NEEDED = (("spam", "finetune_classifier"), ("instructions", "finetune_instruct"), ("preferences", "finetune_dpo"))


class DownloadParams(Section):
    """The download stage: how to fetch, and every dataset."""

    section: ClassVar[str] = "download"

    http: HttpParams = HttpParams()
    datasets: dict[Key, DatasetParams]

    def checks(self, sections: Mapping[str, Section]) -> list[str]:
        problems = [p for key, ds in self.datasets.items() for p in ds.problems(f"download.datasets.{key}")]
        for needed, stage in NEEDED:
            if needed not in self.datasets:
                problems.append(f"download.datasets.{needed}: required key is missing (stage {stage} reads it)")
        return problems
