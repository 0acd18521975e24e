"""Downloads that survive real networks: several sources per file, sha256, retries, atomic writes.
What the ``files`` source of the download stage runs (:mod:`.sources.files`; the dump source
fetches its files with it too), and OpenAI's checkpoint download; what readers of data/raw
check is :mod:`.datasets`.

Each file of a dataset is tried from its sources in order: the URLs from params.yaml (primary,
then backups), then the mirror named by ``$SCRATCHGPT_MIRROR`` (a folder or a base URL holding
files under their final names). A source is rejected on an HTTP error, a timeout after all
retries, a truncated body, a body longer than the file's cap (:func:`byte_cap`), a transfer
past ``download.http.total_timeout`` or a sha256 mismatch, and the next one is tried. The body
streams into a temporary file beside the target and is renamed into place only once verified,
so nothing partial is ever left behind (however the download ends: error, cap, deadline, Ctrl-C
or SIGTERM). When every source fails, :class:`DownloadError` lists each source
and why it failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from scratchgpt.errors import PipelineError
from scratchgpt.files import atomic_dir, temp_path
from scratchgpt.plumbing.datasets import file_dest, verify
from scratchgpt.plumbing.http import (
    CHUNK,
    HttpClient,
    SourceFailed,
    TooLarge,
    progress_bar,
    redact,
)
from scratchgpt.plumbing.sections.download import DatasetParams, FileParams

log = logging.getLogger(__name__)

MIRROR_ENV = "SCRATCHGPT_MIRROR"


class DownloadError(PipelineError, RuntimeError):
    """Every source of a file failed."""

    def __init__(self, name: str, failures: list[tuple[str, str]]):
        self.name = name
        self.failures = failures
        lines = [f"could not download {name}: every source failed"]
        lines += [f"  - {source}: {reason}" for source, reason in failures]
        if not any(source.startswith("mirror") for source, _ in failures):
            lines.append(f"  (offline? set {MIRROR_ENV} to a folder or URL holding {name})")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Source:
    """Where one file may come from: a URL (maybe a zip holding it) or a mirror folder or URL."""

    label: str
    location: str
    zip_member: str | None = None

    @property
    def resumable(self) -> bool:
        """A plain remote file: a partial copy can be continued with an HTTP Range."""
        return _is_remote(self.location) and not self.zip_member

    def fetch(self, client: HttpClient, dest: Path, spec: FileParams, resume: bool = False) -> None:
        cap, cap_source = byte_cap(spec, client.policy.max_bytes)
        if not _is_remote(self.location):
            _copy_local(_local_path(self.location), dest, spec.name, cap, cap_source)
        elif self.zip_member:
            # The archive's own size is unknown: it is capped by max_bytes, its member by ``cap``.
            archive_cap, archive_source = byte_cap(spec.model_copy(update={"size": None}), client.policy.max_bytes)
            archive = temp_path(dest.with_name(dest.name + ".zip"))
            try:
                client.download(self.location, archive, spec.name, max_bytes=archive_cap, cap_source=archive_source)
                extract_member(archive, self.zip_member, dest, cap, cap_source)
            finally:
                archive.unlink(missing_ok=True)
        else:
            client.download(self.location, dest, spec.name, resume=resume, max_bytes=cap, cap_source=cap_source)


def byte_cap(spec: FileParams, default: int) -> tuple[int, str]:
    """The most bytes a transfer of ``spec`` may bring, and where that number comes from: its
    declared ``size``, else its own ``max_bytes``, else ``default`` (download.http.max_bytes)."""
    if spec.size is not None:
        return spec.size, f"the declared size of {spec.name}"
    if spec.max_bytes is not None:
        return spec.max_bytes, f"max_bytes of {spec.name}"
    return default, "download.http.max_bytes"


def _is_remote(location: str) -> bool:
    """A URL to fetch over HTTP(S), rather than a folder path or a file:// URL."""
    return "://" in location and not location.startswith("file://")


def _local_path(location: str) -> Path:
    if location.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
    return Path(location)


def _copy_local(src: Path, dest: Path, desc: str, cap: int, cap_source: str) -> None:
    try:
        size = src.stat().st_size
        if size > cap:
            raise TooLarge(f"{desc}: {src} holds {size} bytes, more than {cap} ({cap_source})")
        with open(src, "rb") as fin, open(dest, "wb") as fout, progress_bar(desc, size) as bar:
            for block in iter(lambda: fin.read(1 << 20), b""):
                fout.write(block)
                bar.update(len(block))
    except FileNotFoundError:
        raise SourceFailed(f"no such file: {src}") from None
    except OSError as e:
        raise SourceFailed(f"cannot read {src}: {e.strerror or e}") from None


def mirror_from_env() -> str | None:
    value = os.environ.get(MIRROR_ENV, "").strip()
    return value or None


def sources_for(spec: FileParams, mirror: str | None = None) -> list[Source]:
    """The sources of one file in the order they are tried: its URLs, then the mirror."""
    sources = []
    for i, url in enumerate(spec.urls):
        is_zip = PurePosixPath(urllib.parse.urlparse(url).path).suffix.lower() == ".zip"
        label = "primary" if i == 0 else "backup" if i == 1 else f"backup {i}"
        sources.append(Source(f"{label} {redact(url)}", url, spec.zip_member if is_zip else None))
    if mirror:
        if _is_remote(mirror):
            location = mirror.rstrip("/") + "/" + urllib.parse.quote(spec.name)
        else:
            location = str(_local_path(mirror) / spec.name)
        sources.append(Source(f"mirror {redact(location)}", location))
    return sources


def safe_member_path(member: str, target_dir: Path) -> Path:
    """Where ``member`` would land under ``target_dir``; refuses names that escape it."""
    target = target_dir.resolve()
    path = (target / member).resolve()
    if (
        member.startswith(("/", "\\"))
        or ".." in PurePosixPath(member.replace("\\", "/")).parts
        or (target not in path.parents)
    ):
        raise SourceFailed(f"zip member {member!r} escapes the target folder; refused")
    return path


def extract_member(archive: Path, member: str, dest: Path, cap: int | None = None, cap_source: str = "") -> None:
    """Copy one named member of a zip to ``dest``; nothing else in the archive is read. A member
    that would unpack to more than ``cap`` bytes is refused before anything is written."""
    safe_member_path(member, dest.parent)
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                names = ", ".join(zf.namelist()[:10])
                raise SourceFailed(f"zip has no member {member!r} (it has: {names})") from None
            if info.is_dir():
                raise SourceFailed(f"zip member {member!r} is a folder, not a file")
            if cap is not None and info.file_size > cap:
                raise TooLarge(
                    f"zip member {member!r} unpacks to {info.file_size} bytes, more than {cap} ({cap_source})"
                )
            with zf.open(info) as fin, open(dest, "wb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
    except zipfile.BadZipFile as e:
        raise SourceFailed(f"not a valid zip file ({e})") from None


# ---------------------------------------------------------------------------------------------
# Files and datasets of files


def partial_path(dest: Path, source: Source) -> Path:
    """Where an interrupted transfer from ``source`` waits to be resumed (one per source URL)."""
    tag = hashlib.sha256(source.location.encode()).hexdigest()[:12]
    return dest.with_name(f".{dest.name}.partial-{tag}")


def fetch_file(
    spec: FileParams, dest: Path, client: HttpClient, mirror: str | None = None, resume: bool = False
) -> str:
    """Put a verified copy of ``spec`` at ``dest`` and return the label of the source used.

    With ``resume``, a transfer that breaks off, passes its deadline or is interrupted (or a
    killed process) leaves a hidden ``.<name>.partial-*`` file beside ``dest`` that the next call
    continues with an HTTP Range; a copy that passes its byte cap or fails verification is always
    deleted. Without ``resume`` nothing partial is kept, whatever ends the download.

    Sources that fail before one succeeds are logged at debug level only; when every source
    fails, :class:`DownloadError` lists them all.
    """
    if dest.exists() and verify(dest, spec) is None:
        return "already present"
    sources = sources_for(spec, mirror)
    if not sources:
        raise DownloadError(spec.name, [("(none)", f"no URLs in params and {MIRROR_ENV} is not set")])
    failures: list[tuple[str, str]] = []
    for source in sources:
        keep = resume and source.resumable
        tmp = partial_path(dest, source) if keep else temp_path(dest)
        verified = False
        try:
            try:
                source.fetch(client, tmp, spec, resume=keep)
            except TooLarge:
                tmp.unlink(missing_ok=True)  # nothing worth resuming
                raise
            problem = verify(tmp, spec)
            if problem:
                tmp.unlink(missing_ok=True)
                raise SourceFailed(problem)
            os.replace(tmp, dest)
            verified = True
            log.debug("%s: from %s", spec.name, source.label)
            for other in sources:  # what other sources left half-done is stale now
                partial_path(dest, other).unlink(missing_ok=True)
            return source.label
        except SourceFailed as e:
            log.debug("%s: %s failed: %s", spec.name, source.label, e)
            failures.append((source.label, str(e)))
        finally:
            if not keep or verified or (tmp.exists() and tmp.stat().st_size == 0):
                tmp.unlink(missing_ok=True)
    raise DownloadError(spec.name, failures)


def fetch_dataset(
    name: str,
    dataset: DatasetParams,
    out_dir: str | os.PathLike[str],
    client: HttpClient | None = None,
    mirror: str | None = None,
    reuse: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Build ``out_dir`` for one dataset of files; it appears complete and verified, or not at all.

    Files already present and verified in ``reuse`` (default: ``out_dir``) are copied; the rest
    are fetched into a staging folder beside ``out_dir`` which then replaces it. Returns
    {file name: source used}.
    """
    out_dir = Path(out_dir)
    reuse = Path(reuse) if reuse is not None else out_dir
    client = client or HttpClient()
    report: dict[str, str] = {}
    if dataset.source != "files":
        raise ValueError(f"{name}: a {dataset.source} dataset, not files (stages/download.py picks its source)")
    with atomic_dir(out_dir) as staging:
        for spec in dataset.files:
            dest = file_dest(staging, spec)
            existing = file_dest(reuse, spec)
            if existing.is_file() and verify(existing, spec) is None:
                shutil.copy2(existing, dest)
                report[dest.name] = "already present"
            else:
                report[dest.name] = fetch_file(spec, dest, client, mirror)
    log.debug("%s: %d file(s) ready", name, len(report))
    return report
