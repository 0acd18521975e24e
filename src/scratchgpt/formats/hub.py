"""GPT-2 from the Hugging Face Hub: a model repository's files at a pinned commit, kept in the
Hugging Face cache (huggingface_hub's layout, so its offline mode and its tools see them), then
converted by :func:`scratchgpt.formats.hf.import_hf`. No TensorFlow is involved.

The listing and the files come through the project's :class:`~scratchgpt.plumbing.http.HttpClient`,
under the guarantees of every other download:

- HTTPS only, redirects included; plain http only to this machine, or anywhere with
  ``init.allow_http``. An ``HF_ENDPOINT`` that breaks this is refused before any request;
- each file is capped at the size the Hub's listing gives it and checked against the listing's
  sha256 (an LFS file) or git blob id (a small file); a partial file resumes on the next run;
- the whole download, listing and every file with their retries, ends at
  ``download.http.total_timeout``;
- config.json is fetched and checked first (a GPT-2 our model can be, whose weights fit in this
  machine's memory, and whose listed weights are not larger than such a model holds): an absurd
  model is refused before its weights are requested.

``HF_TOKEN`` goes to the Hub's own host only, never to the storage it redirects downloads to.
Only safetensors weights are accepted: a repository that holds only pickles
(``pytorch_model.bin``...) is refused before anything is downloaded. Offline (``HF_HUB_OFFLINE``)
the files come from the cache, ``model.safetensors`` checked against the sha256 its blob is named by.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from huggingface_hub import constants, get_token, try_to_load_from_cache
from huggingface_hub.file_download import repo_folder_name

from scratchgpt.files import sha256_file
from scratchgpt.formats.gpt2 import PathLike, WeightsError
from scratchgpt.formats.hf import config_from_hf, import_hf
from scratchgpt.formats.modeldir import ModelError, check_fits, size_keys
from scratchgpt.plumbing.http import HttpClient, HttpStatusError, SourceFailed, TooLarge, check_remote_url, redact
from scratchgpt.plumbing.sections.base import allowed_url
from scratchgpt.plumbing.sections.download import HttpParams

log = logging.getLogger(__name__)

CONFIG, WEIGHTS = "config.json", "model.safetensors"
TOKENIZERS = (("vocab.json", "merges.txt"), ("tokenizer.json",))  # either set
WANTED = (CONFIG, WEIGHTS, *(name for names in TOKENIZERS for name in names))
REFUSED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".safetensors.index.json")
SHA256 = re.compile(r"[0-9a-f]{64}")
GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
MAX_PAGES = 100  # of the Hub's file listing (1000 entries each)
MAX_SMALL = 64 << 20  # config.json or a tokenizer file (GPT-2's largest, tokenizer.json, has 1.4 MB)
LISTED_CAP = "its size in the Hub's file listing"


@dataclass(frozen=True)
class HubFile:
    """A file of the repository as the Hub lists it (None: not known, e.g. offline)."""

    size: int | None = None
    sha256: str | None = None  # an LFS file's content
    git_sha1: str | None = None  # a small file's git blob id

    @property
    def etag(self) -> str | None:
        """Its blob's name in the Hugging Face cache."""
        return self.sha256 or self.git_sha1


def _endpoint(endpoint: str | None) -> tuple[str, str]:
    """The Hub's URL and where it came from."""
    if endpoint:
        return endpoint.rstrip("/"), "endpoint"
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"].rstrip("/"), "HF_ENDPOINT"
    return constants.ENDPOINT.rstrip("/"), "huggingface_hub's default endpoint"


def check_endpoint(endpoint: str, source: str, allow_http: bool) -> None:
    """Refuse a Hub endpoint that is not https:// (plain http only to this machine, or with ``allow_http``)."""
    try:
        check_remote_url(endpoint, allow_http)
    except SourceFailed:
        raise WeightsError(
            f"the Hub at {redact(endpoint)} ({source}) is not https://: refused (plain http only to this "
            "machine, or anywhere with init.allow_http: true)"
        ) from None


def _cache_root(cache_dir: PathLike | None) -> str:
    return str(cache_dir) if cache_dir is not None else os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _cached(repo_id: str, revision: str, cache: str) -> dict[str, HubFile]:
    """Offline: the wanted files the Hugging Face cache holds for ``revision``."""
    found = {}
    for name in WANTED:
        path = try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision)
        if isinstance(path, str):
            blob = Path(os.path.realpath(path)).name  # an LFS file's blob is named by its sha256
            found[name] = HubFile(sha256=blob if SHA256.fullmatch(blob) else None)
    return found


def choose_files(repo_id: str, files: Mapping[str, object]) -> list[str]:
    """The files to fetch: config.json, GPT-2's tokenizer and model.safetensors (the large one
    last), or a clear error."""
    if CONFIG not in files:
        raise WeightsError(f"{repo_id}: no {CONFIG}: not a transformers model repository")
    if WEIGHTS not in files:
        refused = sorted(name for name in files if name.endswith(REFUSED))
        if refused:
            raise WeightsError(
                f"{repo_id}: no {WEIGHTS}, only {', '.join(refused)}; only a single safetensors file is "
                "accepted (a pickle can run code when it is loaded)"
            )
        raise WeightsError(f"{repo_id}: no {WEIGHTS} in the repository")
    for names in TOKENIZERS:
        if all(name in files for name in names):
            return [CONFIG, *names, WEIGHTS]
    raise WeightsError(f"{repo_id}: no GPT-2 tokenizer files (vocab.json + merges.txt, or tokenizer.json)")


def most_weight_bytes(config_path: Path) -> int:
    """The most bytes a model.safetensors of the GPT-2 in ``config_path`` can hold: every value
    in float64, a separate output head and the causal-mask buffers older checkpoints keep, plus
    room for the header."""
    config = config_from_hf(config_path)
    values = config.num_parameters() + config.vocab_size * config.emb_dim + config.n_layers * config.context_length**2
    return 8 * values + (16 << 20)


def check_config(config_path: Path, files: Mapping[str, HubFile], where: str) -> None:
    """Before the weights are requested: config.json must be a GPT-2 our model can be, whose
    weights fit in this machine's memory, and the listed weights no larger than it can hold."""
    config = config_from_hf(config_path)
    try:
        check_fits(config, "cpu", f"{where}: {CONFIG} ({size_keys(config)})")
    except ModelError as e:
        raise WeightsError(str(e)) from None
    listed, most = files[WEIGHTS].size, most_weight_bytes(config_path)
    if listed is not None and listed > most:
        raise WeightsError(
            f"{where}: the Hub lists {WEIGHTS} at {listed} bytes, more than the GPT-2 of its {CONFIG} "
            f"({size_keys(config)}) can hold ({most} bytes at most); refused before downloading it"
        )


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (what the Hub lists for a small file)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_problem(path: Path, info: HubFile) -> str | None:
    """What is wrong with ``path`` as the file ``info`` describes, or None."""
    size = path.stat().st_size
    if info.size is not None and size != info.size:
        return f"has {size} bytes, the Hub lists {info.size}"
    if info.sha256 is not None:
        return None if sha256_file(path) == info.sha256 else f"does not match its sha256 {info.sha256}"
    if info.git_sha1 is not None and git_blob_sha1(path) != info.git_sha1:
        return f"does not match its git blob id {info.git_sha1}"
    return None


class _HubToken(requests.auth.AuthBase):
    """``Authorization: Bearer <HF_TOKEN>`` on requests to the Hub's own origin only."""

    def __init__(self, token: str, endpoint: str):
        self.token, self.origin = token, _origin(endpoint)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if _origin(request.url or "") == self.origin:
            request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class _Download:
    """The files of ``repo_id`` at ``revision`` from the Hub into the Hugging Face cache, all
    within one total deadline."""

    def __init__(self, repo_id: str, revision: str, endpoint: str, cache: str, client: HttpClient):
        self.repo_id, self.revision, self.endpoint, self.client = repo_id, revision, endpoint, client
        self.where = f"{repo_id} at {revision}"
        self.storage = Path(cache) / repo_folder_name(repo_id=repo_id, repo_type="model")
        self.limit = client.policy.total_timeout
        self.deadline = client.clock() + self.limit

    def late(self) -> bool:
        return self.client.clock() >= self.deadline

    def listing(self) -> dict[str, HubFile]:
        """Each file at the root of the repository at ``revision``."""
        where = f"{self.where} ({redact(self.endpoint)})"
        revision = urllib.parse.quote(self.revision, safe="")
        url: str | None = f"{self.endpoint}/api/models/{self.repo_id}/tree/{revision}"
        files: dict[str, HubFile] = {}
        for _ in range(MAX_PAGES):
            assert url is not None
            try:
                resp = self.client.get(url, deadline=self.deadline)
            except HttpStatusError as e:
                raise WeightsError(f"{where}: {_listing_status(e)}") from None
            except (SourceFailed, requests.RequestException) as e:
                raise WeightsError(f"{where}: cannot list the repository's files ({e}){self.cache_hint()}") from None
            try:
                page = resp.json()
            except ValueError:  # requests' JSONDecodeError
                raise WeightsError(f"{where}: the Hub's file listing is not JSON") from None
            files.update(_parse_listing(page, where))
            url = resp.links.get("next", {}).get("url")
            url = urllib.parse.urljoin(resp.url, url) if url else None
            if not url:
                return files
        raise WeightsError(f"{where}: the Hub's file listing has more than {MAX_PAGES} pages")

    def cache_hint(self) -> str:
        """For a listing that failed: how to use the model the cache already holds, if it does."""
        if CONFIG in _cached(self.repo_id, self.revision, str(self.storage.parent)):
            return f"; the model is in the Hugging Face cache ({self.storage.parent}): HF_HUB_OFFLINE=1 uses it"
        return ""

    def fetch(self, name: str, info: HubFile) -> Path:
        """The file ``name`` in the cache: already there (and as listed), else downloaded."""
        pointer = self.storage / "snapshots" / self.revision / name
        if pointer.is_file():
            problem = file_problem(pointer, info)
            if problem:
                raise WeightsError(f"{self.where}: {name} in the cache ({pointer}) {problem}; delete it and run again")
            return pointer
        if name != WEIGHTS and info.size is not None and info.size > MAX_SMALL:
            raise WeightsError(
                f"{self.where}: the Hub lists {name} at {info.size} bytes, more than such a file may have "
                f"({MAX_SMALL}); refused before downloading it"
            )
        if info.etag is None:  # the listing gave neither digest
            raise WeightsError(f"{self.where}: the Hub's file listing gives no sha256 or git blob id for {name}")
        blob = self.storage / "blobs" / info.etag
        if not (blob.is_file() and file_problem(blob, info) is None):
            self.download(name, info, blob)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.is_symlink():  # a dangling link
            pointer.unlink()
        try:
            pointer.symlink_to(os.path.relpath(blob, pointer.parent))
        except OSError:  # no symlinks here: a copy
            shutil.copyfile(blob, pointer)
        return pointer

    def download(self, name: str, info: HubFile, blob: Path) -> None:
        """``name`` into ``blob``, through ``blob``.incomplete (kept for a later resume unless refused)."""
        assert info.size is not None
        partial = blob.with_name(blob.name + ".incomplete")
        blob.parent.mkdir(parents=True, exist_ok=True)
        if partial.is_file() and partial.stat().st_size >= info.size:
            partial.unlink()
        revision, path = urllib.parse.quote(self.revision, safe=""), urllib.parse.quote(name)
        url = f"{self.endpoint}/{self.repo_id}/resolve/{revision}/{path}"
        try:
            self.client.download(
                url, partial, name, resume=True, max_bytes=info.size, cap_source=LISTED_CAP, deadline=self.deadline
            )
        except TooLarge as e:
            partial.unlink(missing_ok=True)
            raise WeightsError(f"{self.where}: {e}") from None
        except HttpStatusError as e:
            missing = e.headers.get("X-Error-Code") == "EntryNotFound"
            raise WeightsError(f"{self.where}: {name} {'not found' if missing else 'not downloaded'} ({e})") from None
        except (SourceFailed, requests.RequestException) as e:
            if self.late():
                got = partial.stat().st_size if partial.is_file() else 0
                raise WeightsError(
                    f"{self.where}: the download from the Hub passed download.http.total_timeout "
                    f"({self.limit:g} s for all its files) in {name} ({got} of {info.size} bytes); stopped"
                ) from None
            raise WeightsError(f"{self.where}: cannot download {name} ({e})") from None
        problem = file_problem(partial, info)
        if problem:
            partial.unlink()
            raise WeightsError(f"{self.where}: {name} as downloaded from {redact(url)} {problem}; not kept")
        os.replace(partial, blob)


def _listing_status(e: HttpStatusError) -> str:
    """What an error status of the file listing means."""
    code = e.headers.get("X-Error-Code")
    if code == "RevisionNotFound":
        return "no such revision; pin a commit hash of the repository"
    if code == "GatedRepo":
        return "a gated model; accept its terms on the Hub and set HF_TOKEN"
    if code == "RepoNotFound" or e.status == 401:
        return "no such model (or a private one: set HF_TOKEN)"
    return f"cannot list the repository's files ({e})"


def _parse_listing(page: Any, where: str) -> dict[str, HubFile]:
    """The files of one page of the Hub's tree listing (folders left out)."""
    if not isinstance(page, list):
        raise WeightsError(f"{where}: the Hub's file listing is not a list")
    files = {}
    for entry in page:
        if not isinstance(entry, dict) or entry.get("type") != "file":
            continue
        path, size, oid, lfs = entry.get("path"), entry.get("size"), entry.get("oid"), entry.get("lfs")
        sha256 = None
        if isinstance(lfs, dict):
            sha256, size = lfs.get("oid"), lfs.get("size")
        elif lfs is not None:
            sha256 = ""  # malformed
        if not isinstance(path, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise WeightsError(f"{where}: the Hub's file listing has a malformed entry ({str(entry)[:200]})")
        if sha256 is not None and not (isinstance(sha256, str) and SHA256.fullmatch(sha256)):
            raise WeightsError(f"{where}: the Hub's file listing gives {path} a malformed LFS sha256")
        git_sha1 = oid if sha256 is None and isinstance(oid, str) and GIT_SHA1.fullmatch(oid) else None
        files[path] = HubFile(size=size, sha256=sha256, git_sha1=git_sha1)
    return files


@contextlib.contextmanager
def hub_snapshot(
    repo_id: str,
    revision: str,
    *,
    endpoint: str | None = None,
    cache_dir: PathLike | None = None,
    http: HttpParams | None = None,
    allow_http: bool = False,
) -> Iterator[Path]:
    """A folder (removed afterwards) holding the GPT-2 files of ``repo_id`` at commit ``revision``,
    linked from the Hugging Face cache (``cache_dir``, else ``HF_HUB_CACHE`` or its default).
    ``http`` (``download.http``) sets timeouts, retries and the total deadline of the download;
    ``allow_http`` (``init.allow_http``) lets plain http reach hosts other than this machine."""
    if not GIT_SHA1.fullmatch(revision):
        raise WeightsError(f"{repo_id} at {revision}: not a commit hash (40 lowercase hex digits); pin one")
    cache = _cache_root(cache_dir)
    if constants.is_offline_mode():
        files = _cached(repo_id, revision, cache)
        if CONFIG not in files:
            raise WeightsError(
                f"{repo_id} at {revision}: not in the Hugging Face cache ({cache}) "
                "and HF_HUB_OFFLINE is set; run once online, or unset it"
            )
        names = choose_files(repo_id, files)
        paths = {}
        for name in names:
            path = Path(str(try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision)))
            problem = file_problem(path, files[name])
            if problem:
                raise WeightsError(
                    f"{repo_id} at {revision}: {name} in the cache ({path}) {problem}; delete it and run again"
                )
            if name == CONFIG:
                check_config(path, {WEIGHTS: HubFile()}, f"{repo_id} at {revision}")
            paths[name] = path
    else:
        url, source = _endpoint(endpoint)
        check_endpoint(url, source, allow_http)
        with requests.Session() as session:
            token = get_token()
            if token:
                session.auth = _HubToken(token, url)
                if not allowed_url(url):
                    log.warning("HF_TOKEN goes to %s over plain http (init.allow_http)", redact(url))
            hub = _Download(repo_id, revision, url, cache, HttpClient(http, session=session, allow_http=allow_http))
            files = hub.listing()
            names = choose_files(repo_id, files)
            paths = {}
            for name in names:
                paths[name] = hub.fetch(name, files[name])
                if name == CONFIG:
                    check_config(paths[name], files, hub.where)
    with tempfile.TemporaryDirectory(prefix="hub-") as tmp:
        folder = Path(tmp) / repo_id.split("/")[-1]
        folder.mkdir()
        for name, path in paths.items():
            try:
                (folder / name).symlink_to(path)
            except OSError:  # no symlinks here: a copy
                shutil.copyfile(path, folder / name)
        yield folder


def import_hub(
    repo_id: str,
    revision: str,
    out_dir: PathLike,
    *,
    endpoint: str | None = None,
    cache_dir: PathLike | None = None,
    http: HttpParams | None = None,
    allow_http: bool = False,
) -> Path:
    """Our model directory ``out_dir`` from the GPT-2 repository ``repo_id`` at ``revision``
    (``http`` and ``allow_http`` as for :func:`hub_snapshot`)."""
    with hub_snapshot(
        repo_id, revision, endpoint=endpoint, cache_dir=cache_dir, http=http, allow_http=allow_http
    ) as folder:
        return import_hf(folder, out_dir)
