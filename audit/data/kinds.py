"""What a subject is: a person (a face, as in PID, Anti-DreamBooth and PhotoGuard) or an artist's
style (as in Glaze, Mist and IMPRESS's style-mimicry setting).

The kind sets what the exploiter's fine-tune and generations say (DreamBooth's instance and class
prompts, the evaluation prompts) and which metric decides where the scenario's verdict metric is
a face metric (FDS and the identity metrics mean nothing on paintings). A subject folder says its
kind in ``subject.yaml`` (``kind: style``); ``--subject-kind`` sets it for every subject; the
default is ``person``.

Style prompts. IMPRESS (App. B) fine-tunes on WikiArt works captioned "<generated title> by
<artist>" and generates "in the style of the victim artist" from the training captions; Glaze and
robust style mimicry do the same with the artist's name. A folder of images carries no titles,
so the style kind writes DreamBooth's form: the rare token stands for the artist
("a painting in the style of sks"), the class prompt is "a painting", and the evaluation prompts
are three generic subjects painted in that style — choices of ours where the papers caption per
image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel

from audit.errors import DataError

KIND_FILE = "subject.yaml"
# The mark of a protection's prompt parameter that a subject kind sets: "instance" (the prompt
# DreamBooth fine-tunes with, 'a photo of sks person') or "class" ('a photo of person').
KIND_PROMPT = "subject_kind_prompt"


@dataclass(frozen=True)
class SubjectKind:
    """The prompts an exploit of this kind of subject uses, and the metric that decides."""

    name: str
    instance_prompt: str
    class_prompt: str
    eval_prompts: tuple[str, ...]
    #: replaces a face verdict metric (None: the scenario's metric decides, as written)
    verdict_metric: str | None
    description: str

    def eval_prompts_for(self, prompts: tuple[str, ...]) -> tuple[str, ...]:
        """The evaluation prompts of this kind in place of the person prompts a tier sets (the
        i-th person prompt becomes the i-th of this kind; a prompt a user wrote stays)."""
        by_person = dict(zip(PERSON_PROMPTS, self.eval_prompts, strict=True))
        return tuple(by_person.get(p, p) for p in prompts)

    def exploit_params(self, fields: set[str]) -> dict[str, str]:
        """The kind's prompts for an exploit whose parameters have these fields."""
        prompts = {"instance_prompt": self.instance_prompt, "class_prompt": self.class_prompt}
        return {key: value for key, value in prompts.items() if key in fields}

    def protection_params(self, model: type[BaseModel]) -> dict[str, str]:
        """The kind's prompts for a protection's parameters: each field that declares itself the
        instance or the class prompt (``Field(json_schema_extra={KIND_PROMPT: "instance"})``)
        takes this kind's. A protection that crafts against DreamBooth's instance prompt (ASPL,
        FSMG, AdvDM) then crafts against the prompt the exploiter of this kind fine-tunes with."""
        prompts = {"instance": self.instance_prompt, "class": self.class_prompt}
        out = {}
        for name, field in model.model_fields.items():
            extra = field.json_schema_extra
            role = extra.get(KIND_PROMPT) if isinstance(extra, dict) else None
            if isinstance(role, str) and role in prompts:
                out[name] = prompts[role]
        return out


PERSON_PROMPTS = ("a photo of sks person", "a selfie of sks person",
                  "a dslr portrait of sks person")
PERSON = SubjectKind(
    "person", "a photo of sks person", "a photo of person", PERSON_PROMPTS, None,
    "a person's face (PID, Anti-DreamBooth, PhotoGuard): the prompts of PID App. A.1")
STYLE = SubjectKind(
    "style", "a painting in the style of sks", "a painting",
    ("a painting in the style of sks", "a landscape painting in the style of sks",
     "a portrait painting in the style of sks"),
    "clip_style_similarity",
    "an artist's style (Glaze, Mist, IMPRESS §5.2): DreamBooth's form of style mimicry, the rare "
    "token standing for the artist")
KINDS = {kind.name: kind for kind in (PERSON, STYLE)}


def get_kind(name: str, where: str = "--subject-kind") -> SubjectKind:
    """The kind called ``name``; a DataError naming ``where`` and the kinds otherwise."""
    if name not in KINDS:
        raise DataError(f"{where}: unknown subject kind '{name}'; use one of: "
                        f"{', '.join(KINDS)}")
    return KINDS[name]


def read_kind(folder: Path | None, override: str | None = None) -> SubjectKind:
    """A subject folder's kind: ``override`` (``--subject-kind``), else its ``subject.yaml``'s
    ``kind``, else ``person``."""
    if override is not None:
        return get_kind(override)
    path = None if folder is None else Path(folder) / KIND_FILE
    if path is None or not path.is_file():
        return PERSON
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid YAML ({exc}); write e.g. 'kind: style'") from exc
    if not isinstance(data, dict) or set(data) - {"kind"}:
        raise DataError(f"{path}: expected one key 'kind' (person or style), got "
                        f"{data!r}; write e.g. 'kind: style'")
    return get_kind(str(data.get("kind", "person")), str(path))
