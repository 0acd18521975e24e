"""What every params section shares: the section base class, field types with their own rules,
the longest strings a params file may give, and validating some sections of a params mapping.

A section class names its section (``section``) and may add rules that span keys or sections
(:meth:`Section.checks`). :func:`validate_sections` validates the sections a stage reads and runs
those rules among them; :mod:`scratchgpt.plumbing.params` does the same for the whole file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model

from scratchgpt.plumbing.params_file import ParamsError, describe_errors, show

PARAMS_FILE = "params.yaml"


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


# The longest strings (in characters) a params file may give: any string at all (a folder path
# included), and the tighter limits of names, URLs, relative paths and free text. Lists of free
# text have a longest count too. The check comes before a key's own rules, so a message never
# quotes a huge value.
MAX_STR = 4_096
MAX_NAME = 200
MAX_URL = 2_048
MAX_RELPATH = 1_024
MAX_TEXT = 10_000

Key = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_check_key)]
Sha256 = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_sha256)]
RelPath = Annotated[str, StringConstraints(max_length=MAX_RELPATH), AfterValidator(_check_relpath)]
Url = Annotated[str, StringConstraints(max_length=MAX_URL), AfterValidator(_check_url)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class Section(BaseModel):
    """A params section: unknown keys and loose types are errors, values are immutable, and no
    string is longer than MAX_STR characters (the types above are tighter)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False, str_max_length=MAX_STR)

    section: ClassVar[str] = ""  # its key in params.yaml (a top-level section), or "" for a part of one

    def checks(self, sections: Mapping[str, Section]) -> list[str]:
        """Problems that span this section's keys, or sections: ``sections`` holds every valid
        section at hand by name, and a rule that reads another one runs only when it is there."""
        return []


def _valid(data: Mapping[str, Any], classes: Sequence[type[Section]]) -> dict[str, Section]:
    """The sections of ``data`` that are valid on their own (when not all of them are)."""
    found = {}
    for cls in classes:
        if cls.section in data:
            try:
                found[cls.section] = cls.model_validate(data[cls.section])
            except ValidationError:
                pass
    return found


def _checks(sections: Mapping[str, Section]) -> list[str]:
    return [problem for section in sections.values() for problem in section.checks(sections)]


def validate_sections(
    data: Any, classes: Sequence[type[Section]], source: str = PARAMS_FILE, model: type[Section] | None = None
) -> Any:
    """The sections ``classes`` of a parsed params mapping, validated with the rules among them,
    as one object with an attribute per section; raises ParamsError listing every problem by its
    full key. Other top-level keys are left alone, unless ``model`` (the class of the result,
    with a field per section) forbids them."""
    if not isinstance(data, dict):
        raise ParamsError(source, [f"(top level): must be a mapping of sections, got {show(data)}"])
    if model is None:
        model = create_model("Sections", __base__=Section, **{cls.section: (cls, ...) for cls in classes})
        data = {key: value for key, value in data.items() if key in model.model_fields}
    try:
        params = model.model_validate(data)
    except ValidationError as e:
        problems = describe_errors(e, model)
        problems += [msg for msg in _checks(_valid(data, classes)) if msg not in problems]
        raise ParamsError(source, problems) from None
    problems = _checks({cls.section: getattr(params, cls.section) for cls in classes})
    if problems:
        raise ParamsError(source, problems)
    return params
