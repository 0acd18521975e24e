"""params.yaml → typed, validated sections.

Everything a stage may read is declared here once. ``load_params`` validates the whole file
before any work starts and reports every problem with its full key, e.g.::

    params.yaml: 2 problems
      pretrain.lr: must be > 0, got -1
      prepare.max_lenght: unknown key, did you mean max_length?

params.yaml holds the values. A key the file always states has no default here; an optional
knob that the file may leave out has one, equal to the file's value wherever the file states
that key (tests/plumbing/test_params.py compares them). The training sections take their keys
and bounds from the loop's own declaration, scratchgpt.book.settings.TrainConfig.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model

from scratchgpt.book.settings import MAX_CONTEXT_LENGTH, MAX_VOCAB_SIZE, TrainConfig
from scratchgpt.plumbing.params_file import ParamsError, describe_errors, read_yaml, show

PARAMS_FILE = "params.yaml"


# ---------------------------------------------------------------------------------------------
# Field types with their own rules


def _check_key(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
        raise ValueError(
            f"must be lowercase letters, digits, '-' or '_' (it names a folder and a DVC stage), got {value!r}"
        )
    return value


def _check_sha256(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"must be a sha256: 64 lowercase hex digits, got {value!r}")
    return value


def _check_relpath(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(f"must be a relative path inside the folder, without '..', got {value!r}")
    return value


def allowed_url(url: str) -> bool:
    """https://, or plain http:// only to a server on this machine (127.0.0.1, localhost, ::1)."""
    return url.startswith("https://") or bool(
        re.match(r"http://([^/@]*@)?(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)", url)
    )


def _check_url(value: str) -> str:
    if not allowed_url(value):
        raise ValueError(f"must be an https:// URL (plain http only for a server on 127.0.0.1), got {value!r}")
    return value


def _check_judge_url(value: str) -> str:
    if not re.match(r"https?://[^/?#@\s]+", value):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value  # whether plain http may go there depends on evaluate.judge_allow_http


def judge_url_problem(url: str, allow_http: bool) -> str | None:
    """Why the judge may not be asked at ``url``, or None. https:// goes anywhere; plain http://
    only to this machine, or to another host with ``evaluate.judge_allow_http: true`` (prompts
    and any API key then cross the network unencrypted)."""
    if not re.match(r"https?://[^/?#@\s]+", url):
        return f"must be an http:// or https:// URL, got {url!r}"
    if allowed_url(url) or (allow_http and url.startswith("http://")):
        return None
    return (
        f"plain http to a host other than this machine needs evaluate.judge_allow_http: true "
        f"(or use https://), got {url!r}"
    )


def _check_env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"must be the name of an environment variable (letters, digits, '_'), got {value!r}")
    return value


# The longest strings (in characters) a params file may give: any string at all (a folder path
# included), and the tighter limits of names, URLs, relative paths and free text. Lists of free
# text have a longest count too. The check comes before a key's own rules, so a message never
# quotes a huge value.
MAX_STR = 4_096
MAX_NAME = 200
MAX_URL = 2_048
MAX_RELPATH = 1_024
MAX_TEXT = 10_000
MAX_URLS = 20  # a file's sources
MAX_TITLES = 1_000  # MediaWiki titles, categories or section headings

Key = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_check_key)]
Sha256 = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_sha256)]
RelPath = Annotated[str, StringConstraints(max_length=MAX_RELPATH), AfterValidator(_check_relpath)]
Url = Annotated[str, StringConstraints(max_length=MAX_URL), AfterValidator(_check_url)]
JudgeUrl = Annotated[str, StringConstraints(max_length=MAX_URL), AfterValidator(_check_judge_url)]
EnvName = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_check_env_name)]
WikiTitle = Annotated[str, StringConstraints(max_length=255)]  # MediaWiki's own limit (255 bytes)
Titles = Annotated[list[WikiTitle], Field(max_length=MAX_TITLES)]


class Section(BaseModel):
    """A params section: unknown keys and loose types are errors, values are immutable, and no
    string is longer than MAX_STR characters (the types above are tighter)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False, str_max_length=MAX_STR)


# ---------------------------------------------------------------------------------------------
# download


DAY = 24 * 3600
GIB = 1 << 30
TIB = 1 << 40


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
    JSONL shards (scratchgpt.plumbing.wikidump)."""

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

    source: Literal["files", "mediawiki", "dump"] = "files"
    files: list[FileParams] = []
    mediawiki: MediaWikiParams | None = None
    dump: DumpParams | None = None


class DownloadParams(Section):
    """The download stage: how to fetch, and every dataset."""

    http: HttpParams = HttpParams()
    datasets: dict[Key, DatasetParams]


# ---------------------------------------------------------------------------------------------
# prepare


class CorpusParams(Section):
    """One corpus (data/shards/<key>/): a dataset's text as token shards."""

    dataset: Key
    tokenizer: Literal["gpt2", "word"]
    documents: Literal["file", "wikitext"]
    train_ratio: float = Field(gt=0, lt=1)


class PrepareParams(Section):
    """The prepare stage: the BPE files' dataset and every corpus."""

    bpe_dataset: Key
    corpora: dict[Key, CorpusParams]


# ---------------------------------------------------------------------------------------------
# model and pretrain


class ModelParams(Section):
    """The GPT architecture (scratchgpt.book.model.GPTConfig, which holds the same bounds: a test
    compares them). Whether it fits the machine's memory is checked where the model is built."""

    vocab_size: int = Field(ge=1, le=MAX_VOCAB_SIZE)
    context_length: int = Field(ge=1, le=MAX_CONTEXT_LENGTH)
    emb_dim: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    n_layers: int = Field(ge=1)
    drop_rate: float = Field(ge=0, lt=1)
    qkv_bias: bool
    tie_weights: bool


def _training_fields() -> dict[str, Any]:
    """Every field of TrainConfig with its type and bounds, required: the three training sections
    differ, and params.yaml states each of them in full."""
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    return {f.name: (hints[f.name], ...) for f in dataclasses.fields(TrainConfig)}


LAUNCHERS = ("python", "torchrun")


def _check_launcher(value: str) -> str:
    """The start of a training stage's command in dvc.yaml (``${<section>.launcher} stages/...``)."""
    words = value.split()
    if not words or words[0] not in LAUNCHERS:
        raise ValueError(
            "must be 'python', or 'torchrun' and its options (e.g. 'torchrun --standalone "
            f"--nproc_per_node 8'), got {value!r}"
        )
    return value


TrainingParams: type[Section] = create_model(
    "TrainingParams",
    __base__=Section,
    __module__=__name__,
    __doc__="""What every training stage shares: the keys and bounds of the loop's settings
    (scratchgpt.book.settings.TrainConfig, declared there once), the device to train on and the
    program that starts the stage (python, or torchrun for DistributedDataParallel).""",
    **_training_fields(),
    device=(Literal["auto", "cpu", "cuda"], ...),
    launcher=(Annotated[str, StringConstraints(max_length=1_000), AfterValidator(_check_launcher)], ...),
)


class PretrainParams(TrainingParams):
    """Chapter 5: pretrain the GPT on the corpora's shards."""

    corpora: list[Key] = Field(min_length=1)
    max_length: int = Field(ge=1)
    stride: int = Field(ge=1)
    sample_prompt: str = Field(max_length=MAX_TEXT)
    sample_tokens: int = Field(ge=0)


# ---------------------------------------------------------------------------------------------
# init

OPENAI_SOURCES = {"gpt2-124M": "124M", "gpt2-355M": "355M", "gpt2-774M": "774M", "gpt2-1558M": "1558M"}
INIT_SOURCES = ("pretrained", *OPENAI_SOURCES)
HUB_PREFIX = "hf:"  # a Hugging Face Hub model: hf:<owner>/<name>
HUB_REPO = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
COMMIT = re.compile(r"[0-9a-f]{40}")


def _check_source(value: str) -> str:
    if value.startswith(HUB_PREFIX):
        if not HUB_REPO.fullmatch(value[len(HUB_PREFIX) :]):
            raise ValueError(f"a Hub model is hf:<owner>/<name>, e.g. hf:openai-community/gpt2, got {value!r}")
        return value
    if value in INIT_SOURCES or "/" in value or value.startswith((".", "~")):
        return value
    close = difflib.get_close_matches(value, INIT_SOURCES, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(
        f"must be one of {', '.join(INIT_SOURCES)}, hf:<owner>/<name> (a Hugging Face Hub model), "
        f"or a folder path (with a '/'), got {value!r}{hint}"
    )


def _check_revision(value: str | None) -> str | None:
    if value is not None and not COMMIT.fullmatch(value):
        raise ValueError(f"must be a commit hash (40 lowercase hex digits) so the run is reproducible, got {value!r}")
    return value


class InitParams(Section):
    """The model both finetuning stages start from (the defaults are params.yaml's)."""

    source: Annotated[str, AfterValidator(_check_source)] = "pretrained"
    revision: Annotated[str | None, AfterValidator(_check_revision)] = None  # the Hub commit of an hf: source
    drop_rate: float | None = Field(0.0, ge=0, lt=1)
    allow_http: bool = False  # an hf: source: plain http also to hosts other than this machine (else only https)


# ---------------------------------------------------------------------------------------------
# finetuning


class LoraParams(Section):
    """LoRA adapters (appendix E), used when a finetuning stage's method is lora."""

    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    targets: list[Literal["attention", "feed_forward", "head"]] = Field(min_length=1)
    train_head: bool
    save: Literal["merged", "adapters"]


# ---------------------------------------------------------------------------------------------
# classifier


class FinetuneParams(TrainingParams):
    """What both finetuning stages add: all (or some) weights trained, or LoRA adapters (appendix E)."""

    method: Literal["full", "lora"]
    lora: LoraParams


class ClassifierParams(FinetuneParams):
    """Chapter 6: finetune the base model into a spam classifier."""

    quoting: Literal["book", "none"]
    balance: bool
    train_frac: float = Field(gt=0, lt=1)
    val_frac: float = Field(gt=0, lt=1)
    split_seed: int
    max_length: int = Field(ge=0, le=MAX_CONTEXT_LENGTH)  # and <= the base model's context
    head_position: Literal["last_non_pad", "last"]
    trainable: Literal["all", "head", "last_blocks"]
    trainable_blocks: int = Field(ge=0)


# ---------------------------------------------------------------------------------------------
# instruct


class InstructParams(FinetuneParams):
    """Chapter 7: finetune the base model to follow instructions."""

    train_frac: float = Field(gt=0, lt=1)
    test_frac: float = Field(gt=0, lt=1)
    shuffle: bool
    split_seed: int
    allowed_max_length: int = Field(ge=2, le=MAX_CONTEXT_LENGTH)  # then cut to the base model's context
    mask_prompt: bool
    response_tokens: int = Field(ge=1)
    response_batch: int = Field(ge=1)


# ---------------------------------------------------------------------------------------------
# dpo


class DPOParams(FinetuneParams):
    """Chapter 7's bonus: preference tuning of the instruction model with DPO. The preference
    file is split with the instruct section's keys, so the test entries are chapter 7's."""

    beta: float = Field(gt=0)
    allowed_max_length: int = Field(ge=2, le=MAX_CONTEXT_LENGTH)  # then cut to the model's context
    mask_prompt: bool
    response_tokens: int = Field(ge=1)
    response_batch: int = Field(ge=1)


# ---------------------------------------------------------------------------------------------
# evaluate


class EvaluateParams(Section):
    """Scoring the finetuned models on their test splits; the LLM judge is optional."""

    batch_size: int = Field(ge=1)
    judge_url: JudgeUrl | None = None  # no judge unless one is given
    judge_api: Literal["ollama", "openai"] = "ollama"  # Ollama's /api/chat or /v1/chat/completions
    judge_model: str = Field(min_length=1, max_length=MAX_NAME)
    judge_api_key_env: EnvName | None = "SCRATCHGPT_JUDGE_API_KEY"  # the variable's name, never the key
    judge_allow_http: bool = False  # plain http to a host other than this machine
    judge_seed: int
    judge_temperature: float = Field(ge=0, le=2)
    judge_num_ctx: int = Field(ge=1, le=1_048_576)
    judge_max_tokens: int = Field(16, ge=1, le=4096)  # openai: the most tokens of one reply
    judge_timeout: float = Field(gt=0, le=86_400)


class ReportParams(Section):
    """The one-page report."""

    attention_text: str = Field(min_length=1, max_length=1_000)  # a heat map of its tokens, squared
    samples: int = Field(ge=0)


# ---------------------------------------------------------------------------------------------
# the whole file


class Params(Section):
    """The whole of params.yaml: every section is required."""

    download: DownloadParams
    prepare: PrepareParams
    model: ModelParams
    pretrain: PretrainParams
    init: InitParams
    classifier: ClassifierParams
    instruct: InstructParams
    dpo: DPOParams
    evaluate: EvaluateParams
    report: ReportParams


def _cross_checks(sections: dict[str, Any]) -> list[str]:
    """Rules that span sections or entries, reported like field errors. ``sections`` holds the
    valid sections by name; each rule runs when the sections it reads are among them, so its
    problems are reported together with the field errors of the other sections."""
    problems: list[str] = []

    def have(*names: str) -> bool:
        return all(name in sections for name in names)

    if have("download"):
        datasets = sections["download"].datasets
        for key, ds in datasets.items():
            where = f"download.datasets.{key}"
            if ds.source == "files" and not ds.files:
                problems.append(f"{where}.files: must list at least one file when source is 'files'")
            if ds.source == "mediawiki" and ds.mediawiki is None:
                problems.append(f"{where}.mediawiki: required when source is 'mediawiki'")
            if ds.source == "dump" and ds.dump is None:
                problems.append(f"{where}.dump: required when source is 'dump'")
            if ds.source == "mediawiki" and ds.mediawiki and not (ds.mediawiki.titles or ds.mediawiki.categories):
                problems.append(f"{where}.mediawiki: give at least one of titles or categories")
            seen: dict[str, int] = {}
            for i, f in enumerate(ds.files):
                if f.sha256 is None:
                    problems.append(f"{where}.files[{i}].sha256: required key is missing")
                base = PurePosixPath(f.name).name
                if base in seen:
                    problems.append(
                        f"{where}.files[{i}].name: file name {base!r} is already used by files[{seen[base]}]"
                    )
                seen[base] = i
        for needed, stage in (
            ("spam", "finetune_classifier"),
            ("instructions", "finetune_instruct"),
            ("preferences", "finetune_dpo"),
        ):
            if needed not in datasets:
                problems.append(f"download.datasets.{needed}: required key is missing (stage {stage} reads it)")
    if have("download", "prepare"):
        datasets = sections["download"].datasets
        names = ", ".join(sorted(datasets))
        bpe = sections["prepare"].bpe_dataset
        if bpe not in datasets:
            problems.append(f"prepare.bpe_dataset: unknown dataset {bpe!r}, expected one of: {names}")
        for key, corpus in sections["prepare"].corpora.items():
            if corpus.dataset not in datasets:
                problems.append(
                    f"prepare.corpora.{key}.dataset: unknown dataset {corpus.dataset!r}, expected one of: {names}"
                )
    if have("init"):
        init = sections["init"]
        hub = init.source.startswith(HUB_PREFIX)
        if hub and init.revision is None:
            problems.append(f"init.revision: required for the Hub model {init.source} (the commit hash to download)")
        if not hub and init.revision is not None:
            problems.append(f"init.revision: only for a Hub source (hf:<owner>/<name>), not {init.source!r}")
    if have("model"):
        model = sections["model"]
        if model.emb_dim % model.n_heads:
            problems.append(f"model.emb_dim: must be divisible by model.n_heads ({model.n_heads}), got {model.emb_dim}")
    for name in ("pretrain", "classifier", "instruct", "dpo"):
        section = sections.get(name)
        if section is not None and section.cosine and section.min_lr > section.lr:
            problems.append(f"{name}.min_lr: must be <= {name}.lr ({section.lr:g}), got {section.min_lr:g}")
    if have("classifier"):
        clf = sections["classifier"]
        if clf.train_frac + clf.val_frac >= 1:
            problems.append(
                "classifier.train_frac + classifier.val_frac: must be < 1 to leave a test split, "
                f"got {clf.train_frac + clf.val_frac:g}"
            )
    if have("instruct"):
        ins = sections["instruct"]
        if ins.train_frac + ins.test_frac >= 1:
            problems.append(
                "instruct.train_frac + instruct.test_frac: must be < 1 to leave a validation split, "
                f"got {ins.train_frac + ins.test_frac:g}"
            )
    if have("instruct", "dpo"):
        ins, dpo = sections["instruct"], sections["dpo"]
        if (
            dpo.method == "lora"
            and dpo.lora.save == "adapters"
            and ins.method == "lora"
            and ins.lora.save == "adapters"
        ):
            problems.append(
                "dpo.lora.save: adapters must sit beside a model with its own weights, but models/instruct holds "
                "adapters too (instruct.lora.save: adapters); save one of them merged"
            )
    if have("model", "pretrain"):
        model, pretrain = sections["model"], sections["pretrain"]
        for key in ("max_length", "stride"):
            if getattr(pretrain, key) > model.context_length:
                problems.append(
                    f"pretrain.{key}: must be <= model.context_length ({model.context_length}), "
                    f"got {getattr(pretrain, key)}"
                )
    if have("model", "init", "classifier"):
        model, clf = sections["model"], sections["classifier"]
        # Other sources' context is known once the base model is (stage finetune_classifier checks it).
        if sections["init"].source == "pretrained" and clf.max_length > model.context_length:
            problems.append(
                f"classifier.max_length: must be <= model.context_length ({model.context_length}, "
                f"the context of init.source pretrained), got {clf.max_length}"
            )
    if have("prepare", "pretrain"):
        corpora, pretrain = sections["prepare"].corpora, sections["pretrain"]
        for i, name in enumerate(pretrain.corpora):
            if name not in corpora:
                problems.append(
                    f"pretrain.corpora[{i}]: unknown corpus {name!r}, expected one of: {', '.join(sorted(corpora))}"
                )
        kinds = {corpora[c].tokenizer for c in pretrain.corpora if c in corpora}
        if len(kinds) > 1:
            problems.append(
                f"pretrain.corpora: every corpus must use the same tokenizer, got {', '.join(sorted(kinds))}"
            )
        if have("model") and "gpt2" in kinds and sections["model"].vocab_size < 50257:
            problems.append(
                f"model.vocab_size: must be >= 50257 for the gpt2 tokenizer, got {sections['model'].vocab_size}"
            )
    if have("evaluate"):
        ev = sections["evaluate"]
        problem = ev.judge_url and judge_url_problem(ev.judge_url, ev.judge_allow_http)
        if problem:
            problems.append(f"evaluate.judge_url: {problem}")
    return problems


def _valid_sections(data: dict[str, Any]) -> dict[str, Section]:
    """The sections of ``data`` that are valid on their own (when the whole file is not)."""
    found = {}
    for name, field in Params.model_fields.items():
        if name in data:
            try:
                found[name] = field.annotation.model_validate(data[name])
            except ValidationError:
                pass
    return found


def validate(data: Any, source: str = PARAMS_FILE) -> Params:
    """Validate an already-parsed params mapping; raises ParamsError listing every problem."""
    if not isinstance(data, dict):
        raise ParamsError(source, [f"(top level): must be a mapping of sections, got {show(data)}"])
    try:
        params = Params.model_validate(data)
    except ValidationError as e:
        problems = describe_errors(e, Params)
        problems += [msg for msg in _cross_checks(_valid_sections(data)) if msg not in problems]
        raise ParamsError(source, problems) from None
    problems = _cross_checks({name: getattr(params, name) for name in Params.model_fields})
    if problems:
        raise ParamsError(source, problems)
    return params


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml (the whole file, so a typo anywhere stops every stage)."""
    return validate(read_yaml(path), str(path))
