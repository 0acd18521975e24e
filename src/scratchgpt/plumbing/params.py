"""params.yaml → typed, validated sections.

Everything a stage may read is declared here once. ``load_params`` validates the whole file
before any work starts and reports every problem with its full key, e.g.::

    params.yaml: 2 problems
      pretrain.lr: must be > 0, got -1
      prepare.max_lenght: unknown key, did you mean max_length?
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from scratchgpt.errors import PipelineError

PARAMS_FILE = "params.yaml"


class ParamsError(PipelineError, ValueError):
    """params.yaml is unreadable or invalid; the message lists every problem with its key."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"{source}: {count}\n" + "\n".join(f"  {p}" for p in problems))


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
        raise ValueError(
            f"must be an https:// URL (plain http only for a server on 127.0.0.1), got {value!r}"
        )
    return value


Key = Annotated[str, AfterValidator(_check_key)]
Sha256 = Annotated[str, AfterValidator(_check_sha256)]
RelPath = Annotated[str, AfterValidator(_check_relpath)]
Url = Annotated[str, AfterValidator(_check_url)]


class Section(BaseModel):
    """A params section: unknown keys and loose types are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# download


class HttpParams(Section):
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    retries: int = Field(3, ge=0, le=20)
    backoff: float = Field(1.0, ge=0)
    max_backoff: float = Field(60.0, ge=0)
    user_agent: str = Field("scratchgpt/0.1 (educational LLM pipeline)", min_length=1)


class FileParams(Section):
    name: RelPath
    sha256: Sha256 | None = None  # required for the download stage's datasets
    urls: list[Url] = []
    zip_member: RelPath | None = None
    size: int | None = Field(None, ge=0)


class MediaWikiParams(Section):
    api_url: Url = "https://en.wikipedia.org/w/api.php"
    titles: list[str] = []
    categories: list[str] = []
    max_articles: int = Field(100, ge=1)
    min_interval: float = Field(1.0, ge=0)
    min_chars: int = Field(200, ge=0)
    drop_sections: list[str] = [
        "See also",
        "Notes",
        "References",
        "Citations",
        "Sources",
        "Bibliography",
        "Further reading",
        "External links",
    ]


class DatasetParams(Section):
    source: Literal["files", "mediawiki"] = "files"
    files: list[FileParams] = []
    mediawiki: MediaWikiParams | None = None


class DownloadParams(Section):
    http: HttpParams = HttpParams()
    datasets: dict[Key, DatasetParams]


# ---------------------------------------------------------------------------------------------
# prepare


class CorpusParams(Section):
    dataset: Key
    tokenizer: Literal["gpt2", "word"] = "gpt2"
    documents: Literal["file", "wikitext"] = "file"
    train_ratio: float = Field(0.9, gt=0, lt=1)


class PrepareParams(Section):
    bpe_dataset: Key = "gpt2"
    corpora: dict[Key, CorpusParams]


# ---------------------------------------------------------------------------------------------
# model and pretrain


class ModelParams(Section):
    """The GPT architecture (scratchgpt.model.GPTConfig)."""

    vocab_size: int = Field(50257, ge=1)
    context_length: int = Field(1024, ge=1)
    emb_dim: int = Field(768, ge=1)
    n_heads: int = Field(12, ge=1)
    n_layers: int = Field(12, ge=1)
    drop_rate: float = Field(0.1, ge=0, lt=1)
    qkv_bias: bool = False
    tie_weights: bool = False


class TrainingParams(Section):
    """What every training stage shares (scratchgpt.train.TrainConfig)."""

    seed: int = 123
    epochs: int = Field(1, ge=1)
    max_steps: int = Field(0, ge=0)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(4e-4, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(0, ge=0)
    initial_lr: float = Field(0.0, ge=0)
    cosine: bool = False
    min_lr: float = Field(0.0, ge=0)
    grad_clip: float = Field(0.0, ge=0)
    grad_accum: int = Field(1, ge=1)
    eval_freq: int = Field(5, ge=1)
    eval_iter: int = Field(5, ge=1)
    checkpoint_every: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class PretrainParams(TrainingParams):
    corpora: list[Key] = Field(min_length=1)
    max_length: int = Field(256, ge=1)
    stride: int = Field(256, ge=1)
    sample_prompt: str = "Every effort moves you"
    sample_tokens: int = Field(50, ge=0)


# ---------------------------------------------------------------------------------------------
# init

OPENAI_SOURCES = {"gpt2-124M": "124M", "gpt2-355M": "355M", "gpt2-774M": "774M", "gpt2-1558M": "1558M"}
INIT_SOURCES = ("pretrained", *OPENAI_SOURCES)


def _check_source(value: str) -> str:
    if value in INIT_SOURCES or "/" in value or value.startswith((".", "~")):
        return value
    close = difflib.get_close_matches(value, INIT_SOURCES, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(
        f"must be one of {', '.join(INIT_SOURCES)}, or a folder path (with a '/'), got {value!r}{hint}"
    )


class InitParams(Section):
    source: Annotated[str, AfterValidator(_check_source)] = "pretrained"
    drop_rate: float | None = Field(0.0, ge=0, lt=1)


# ---------------------------------------------------------------------------------------------
# finetuning


class LoraParams(Section):
    """LoRA adapters (appendix E), used when a finetuning stage's method is lora."""

    rank: int = Field(16, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[Literal["attention", "feed_forward", "head"]] = Field(
        ["attention", "feed_forward", "head"], min_length=1
    )
    train_head: bool = False
    save: Literal["merged", "adapters"] = "merged"


# ---------------------------------------------------------------------------------------------
# classifier


class FinetuneParams(TrainingParams):
    """What both finetuning stages add: all (or some) weights trained, or LoRA adapters (appendix E)."""

    method: Literal["full", "lora"] = "full"
    lora: LoraParams = LoraParams()


class ClassifierParams(FinetuneParams):
    """Chapter 6: finetune the base model into a spam classifier."""

    quoting: Literal["book", "none"] = "book"
    balance: bool = True
    train_frac: float = Field(0.7, gt=0, lt=1)
    val_frac: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 123
    max_length: int = Field(0, ge=0)
    head_position: Literal["last_non_pad", "last"] = "last_non_pad"
    trainable: Literal["all", "head", "last_blocks"] = "last_blocks"
    trainable_blocks: int = Field(1, ge=0)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(5e-5, gt=0)
    eval_freq: int = Field(50, ge=1)


# ---------------------------------------------------------------------------------------------
# instruct


class InstructParams(FinetuneParams):
    """Chapter 7: finetune the base model to follow instructions."""

    train_frac: float = Field(0.85, gt=0, lt=1)
    test_frac: float = Field(0.10, gt=0, lt=1)
    shuffle: bool = False
    split_seed: int = 123
    allowed_max_length: int = Field(1024, ge=2)
    mask_prompt: bool = False
    response_tokens: int = Field(256, ge=1)
    response_batch: int = Field(8, ge=1)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(5e-5, gt=0)


# ---------------------------------------------------------------------------------------------
# evaluate


class EvaluateParams(Section):
    """Scoring the finetuned models on their test splits; the LLM judge is optional."""

    batch_size: int = Field(8, ge=1)
    judge_url: Url | None = None
    judge_model: str = Field("llama3", min_length=1)
    judge_seed: int = 123
    judge_temperature: float = Field(0.0, ge=0)
    judge_num_ctx: int = Field(2048, ge=1)
    judge_timeout: float = Field(600.0, gt=0)


class ReportParams(Section):
    """The one-page report."""

    attention_text: str = Field("Every effort moves you", min_length=1)
    samples: int = Field(3, ge=0)


# ---------------------------------------------------------------------------------------------
# the whole file


class Params(Section):
    download: DownloadParams
    prepare: PrepareParams
    model: ModelParams = ModelParams()
    pretrain: PretrainParams
    init: InitParams = InitParams()
    classifier: ClassifierParams = ClassifierParams()
    instruct: InstructParams = InstructParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()


def _cross_checks(params: Params) -> list[str]:
    """Rules that span sections or entries, reported like field errors."""
    problems = []
    datasets = params.download.datasets
    for key, ds in datasets.items():
        where = f"download.datasets.{key}"
        if ds.source == "files" and not ds.files:
            problems.append(f"{where}.files: must list at least one file when source is 'files'")
        if ds.source == "mediawiki" and ds.mediawiki is None:
            problems.append(f"{where}.mediawiki: required when source is 'mediawiki'")
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
    for needed, stage in (("spam", "finetune_classifier"), ("instructions", "finetune_instruct")):
        if needed not in datasets:
            problems.append(f"download.datasets.{needed}: required key is missing (stage {stage} reads it)")
    names = ", ".join(sorted(datasets))
    bpe = params.prepare.bpe_dataset
    if bpe not in datasets:
        problems.append(f"prepare.bpe_dataset: unknown dataset {bpe!r}, expected one of: {names}")
    for key, corpus in params.prepare.corpora.items():
        if corpus.dataset not in datasets:
            problems.append(
                f"prepare.corpora.{key}.dataset: unknown dataset {corpus.dataset!r}, expected one of: {names}"
            )
    model, pretrain = params.model, params.pretrain
    if model.emb_dim % model.n_heads:
        problems.append(
            f"model.emb_dim: must be divisible by model.n_heads ({model.n_heads}), got {model.emb_dim}"
        )
    for name, section in (("pretrain", pretrain), ("classifier", params.classifier), ("instruct", params.instruct)):
        if section.cosine and section.min_lr > section.lr:
            problems.append(f"{name}.min_lr: must be <= {name}.lr ({section.lr:g}), got {section.min_lr:g}")
    clf = params.classifier
    if clf.train_frac + clf.val_frac >= 1:
        problems.append(
            "classifier.train_frac + classifier.val_frac: must be < 1 to leave a test split, "
            f"got {clf.train_frac + clf.val_frac:g}"
        )
    ins = params.instruct
    if ins.train_frac + ins.test_frac >= 1:
        problems.append(
            "instruct.train_frac + instruct.test_frac: must be < 1 to leave a validation split, "
            f"got {ins.train_frac + ins.test_frac:g}"
        )
    if pretrain.max_length > model.context_length:
        problems.append(
            f"pretrain.max_length: must be <= model.context_length ({model.context_length}), got {pretrain.max_length}"
        )
    corpora = params.prepare.corpora
    for i, name in enumerate(pretrain.corpora):
        if name not in corpora:
            problems.append(
                f"pretrain.corpora[{i}]: unknown corpus {name!r}, expected one of: {', '.join(sorted(corpora))}"
            )
    kinds = {corpora[c].tokenizer for c in pretrain.corpora if c in corpora}
    if len(kinds) > 1:
        problems.append(f"pretrain.corpora: every corpus must use the same tokenizer, got {', '.join(sorted(kinds))}")
    if "gpt2" in kinds and model.vocab_size < 50257:
        problems.append(f"model.vocab_size: must be >= 50257 for the gpt2 tokenizer, got {model.vocab_size}")
    return problems


# ---------------------------------------------------------------------------------------------
# YAML reading: YAML 1.2 numbers (DVC reads params.yaml that way) and no silent duplicate keys


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; syntax errors become ParamsError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ParamsError(str(path), [f"cannot read: {e.strerror or e}"]) from e
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ParamsError(str(path), [f"{where}{problem}"]) from e


# ---------------------------------------------------------------------------------------------
# Error messages


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for an invalid mapping key: the key is already named
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section class found by following ``loc`` (field names, dict keys, list indices)."""
    tp: Any = model
    rest = list(loc)
    while rest:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
            if not models:
                return None
            tp = models[0]
            continue
        if origin in (list, dict):
            tp = typing.get_args(tp)[-1]
            rest.pop(0)
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(rest.pop(0))
            if field is None:
                return None
            tp = field.annotation
            continue
        return None
    while typing.get_origin(tp) in (typing.Union, types.UnionType, Annotated):
        args = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        tp = args[0] if args else None
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _message(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{_dotted(loc)}: unknown key, {hint}"
    if kind == "missing":
        return f"{_dotted(loc)}: required key is missing"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{_dotted(loc)}: must be {bounds[kind]} {_show(limit)}, got {_show(value)}"
    if kind == "literal_error":
        return f"{_dotted(loc)}: must be one of {ctx['expected']}, got {_show(value)}"
    if kind in _TYPE_WORDS:
        return f"{_dotted(loc)}: must be {_TYPE_WORDS[kind]}, got {_show(value)}"
    if kind == "finite_number":
        return f"{_dotted(loc)}: must be a finite number, got {_show(value)}"
    if kind == "string_too_short":
        return f"{_dotted(loc)}: must not be empty"
    if kind == "value_error":
        return f"{_dotted(loc)}: {str(ctx.get('error', err['msg']))}"
    return f"{_dotted(loc)}: {err['msg'].lower()}, got {_show(value)}"


def validate(data: Any, source: str = PARAMS_FILE) -> Params:
    """Validate an already-parsed params mapping; raises ParamsError listing every problem."""
    if not isinstance(data, dict):
        raise ParamsError(source, [f"(top level): must be a mapping of sections, got {_show(data)}"])
    try:
        params = Params.model_validate(data)
    except ValidationError as e:
        seen: set[str] = set()
        problems = []
        for err in e.errors():
            msg = _message(err, Params)
            if msg not in seen:
                seen.add(msg)
                problems.append(msg)
        raise ParamsError(source, problems) from None
    problems = _cross_checks(params)
    if problems:
        raise ParamsError(source, problems)
    return params


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml (the whole file, so a typo anywhere stops every stage)."""
    return validate(read_yaml(path), str(path))
