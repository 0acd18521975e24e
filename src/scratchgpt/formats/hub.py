"""GPT-2 from the Hugging Face Hub: a model repository's files at a pinned commit, fetched with
``huggingface_hub`` (its cache, its resume, its offline mode, ``HF_TOKEN`` from the environment),
then converted by :func:`scratchgpt.formats.hf.import_hf`. No TensorFlow is involved.

Only safetensors weights are accepted: a repository that holds only pickles
(``pytorch_model.bin``...) is refused before anything is downloaded. ``model.safetensors`` is
checked against the sha256 the Hub lists for it (or, offline, the one its cache is named by).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

from scratchgpt.files import sha256_file
from scratchgpt.formats.gpt2 import PathLike, WeightsError, first_line
from scratchgpt.formats.hf import import_hf

CONFIG, WEIGHTS = "config.json", "model.safetensors"
TOKENIZERS = (("vocab.json", "merges.txt"), ("tokenizer.json",))  # either set
WANTED = (CONFIG, WEIGHTS, *(name for names in TOKENIZERS for name in names))
REFUSED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".safetensors.index.json")
SHA256 = re.compile(r"[0-9a-f]{64}")


def _endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _listing(repo_id: str, revision: str, endpoint: str) -> dict[str, str | None]:
    """Each file of the repository at ``revision``: its LFS sha256, or None for a small file."""
    where = f"{repo_id} at {revision} ({endpoint})"
    try:
        entries = HfApi(endpoint=endpoint).list_repo_tree(repo_id, revision=revision, recursive=True)
        return {e.path: (e.lfs.sha256 if e.lfs else None) for e in entries if isinstance(e, RepoFile)}
    except RevisionNotFoundError:
        raise WeightsError(f"{where}: no such revision; pin a commit hash of the repository") from None
    except GatedRepoError:
        raise WeightsError(f"{where}: a gated model; accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"{where}: no such model (or a private one: set HF_TOKEN)") from None
    except Exception as e:  # the HTTP client's own errors too (no network, refused, timeout)
        raise WeightsError(f"{where}: cannot list the repository's files ({_reason(e)})") from None


def _cached(repo_id: str, revision: str, cache_dir: str | None) -> dict[str, str | None]:
    """Offline: the wanted files the Hugging Face cache holds for ``revision``."""
    found = {}
    for name in WANTED:
        path = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision)
        if isinstance(path, str):
            blob = Path(os.path.realpath(path)).name  # an LFS file's blob is named by its sha256
            found[name] = blob if SHA256.fullmatch(blob) else None
    return found


def choose_files(repo_id: str, files: dict[str, str | None]) -> list[str]:
    """The files to fetch: config.json, model.safetensors and GPT-2's tokenizer, or a clear error."""
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
            return [CONFIG, WEIGHTS, *names]
    raise WeightsError(f"{repo_id}: no GPT-2 tokenizer files (vocab.json + merges.txt, or tokenizer.json)")


@contextlib.contextmanager
def hub_snapshot(
    repo_id: str, revision: str, *, endpoint: str | None = None, cache_dir: PathLike | None = None
) -> Iterator[Path]:
    """A folder (removed afterwards) holding the GPT-2 files of ``repo_id`` at commit ``revision``,
    linked from the Hugging Face cache (``cache_dir``, else ``HF_HUB_CACHE`` or its default)."""
    endpoint = _endpoint(endpoint)
    cache = str(cache_dir) if cache_dir is not None else os.environ.get("HF_HUB_CACHE") or None
    offline = constants.is_offline_mode()
    files = _cached(repo_id, revision, cache) if offline else _listing(repo_id, revision, endpoint)
    if offline and CONFIG not in files:
        raise WeightsError(
            f"{repo_id} at {revision}: not in the Hugging Face cache ({cache or constants.HF_HUB_CACHE}) "
            "and HF_HUB_OFFLINE is set; run once online, or unset it"
        )
    names = choose_files(repo_id, files)
    with tempfile.TemporaryDirectory(prefix="hub-") as tmp:
        folder = Path(tmp) / repo_id.split("/")[-1]
        folder.mkdir()
        for name in names:
            try:
                path = hf_hub_download(repo_id, name, revision=revision, endpoint=endpoint, cache_dir=cache)
            except EntryNotFoundError as e:  # LocalEntryNotFoundError too: offline, or the Hub unreachable
                reason = "not in the cache and the Hub unreachable" if isinstance(e, LocalEntryNotFoundError) else ""
                raise WeightsError(
                    f"{repo_id} at {revision}: {name} {reason or 'not found'} ({first_line(e)})"
                ) from None
            except Exception as e:
                raise WeightsError(f"{repo_id} at {revision}: cannot download {name} ({_reason(e)})") from None
            expected = files.get(name)
            if expected is not None and sha256_file(path) != expected:
                raise WeightsError(
                    f"{repo_id} at {revision}: {name} in the cache ({path}) does not match its sha256 "
                    f"{expected}; delete it and run again"
                )
            try:
                (folder / name).symlink_to(path)
            except OSError:  # no symlinks here: a copy
                shutil.copyfile(path, folder / name)
        yield folder


def import_hub(
    repo_id: str, revision: str, out_dir: PathLike, *, endpoint: str | None = None, cache_dir: PathLike | None = None
) -> Path:
    """Our model directory ``out_dir`` from the GPT-2 repository ``repo_id`` at ``revision``."""
    with hub_snapshot(repo_id, revision, endpoint=endpoint, cache_dir=cache_dir) as folder:
        return import_hf(folder, out_dir)


def _reason(error: Exception) -> str:
    """Why the Hub could not answer, with what to do when it cannot be reached at all."""
    if isinstance(error, HfHubHTTPError):
        return first_line(error)
    return (
        f"{type(error).__name__}: {first_line(error)}; without a network, a model already in the Hugging Face "
        "cache works with HF_HUB_OFFLINE=1"
    )
