"""The text contract: how a (task, query) or a (title, text) becomes the string the encoder reads.

One home for the templates and the default task strings. Training (`data.formatting`), evaluation
(`evaluation.runner`, `evaluation.mteb_eval`), export (named sentence-transformers prompts) and the
FRet builder's embedder all format through here, and a trained model carries its `Template`
(checkpoint and `gecko_encoder.json`), so a reader asks the model rather than a default.

The paper's Table 7 format (the `gecko` preset) beat plain concatenation (the `plain` preset):
    query side:     "task: {task} | query: {query}"
    document side:  "title: {title} | text: {text}"   (title "none" when absent)
    symmetric side: the query format, with "{title} {text}" as the query (title dropped when absent)
Symmetric sets (STS, NLI, classification, duplicate questions) put the query format on both sides.
Their title is joined to the text, never dropped, so training and evaluation see the same string
for a titled duplicate question (CQADupstack) as for an untitled sentence.

A model we did not train is read as its authors meant (`resolve_format`, the one home of that rule):
the format it records (ours), else the prompts its sentence-transformers config declares, applied per
role as mteb does, else raw text. Gecko's templates only when asked for.

No torch here: the data builder imports this module before any model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gecko_lightning.errors import UserError

PRESETS: dict[str, dict[str, str]] = {
    "gecko": {"query": "task: {task} | query: {query}", "document": "title: {title} | text: {text}", "empty_title": "none"},
    "plain": {"query": "{task} {query}", "document": "{title} {text}", "empty_title": ""},
}
# Task strings per MTEB task type; retrieval sets default to RETRIEVAL_TASK. configs/eval/gecko_prompts.yaml
# refines them per dataset; these are what an installed package without that file uses.
RETRIEVAL_TASK = "search result"
TASK_TYPES: dict[str, str] = {"Classification": "classification", "STS": "sentence similarity",
                              "PairClassification": "sentence similarity", "Clustering": RETRIEVAL_TASK}
# How a model's inputs are formatted: as the model itself says (`resolve_format`), the gecko preset
# whatever the model says, or raw text (MTEB-style, prompt-free models).
PROMPT_STYLES = ("model", "gecko", "none")
ST_CONFIG = "config_sentence_transformers.json"  # where a sentence-transformers folder declares its prompts
_MARK = "\x00"  # stands for the user's text when a template is cut into a sentence-transformers prefix


def join_title(title: str | None, text: str) -> str:
    """"title text", or the text alone when there is no title: how MTEB joins a BEIR document."""
    return f"{title} {text}".strip() if title else text.strip()


@dataclass(frozen=True)
class Template:
    """How a record becomes text. `query` sees {task} and {query}; `document` sees {title} and {text}."""

    query: str = PRESETS["gecko"]["query"]
    document: str = PRESETS["gecko"]["document"]
    empty_title: str = "none"

    @classmethod
    def from_preset(cls, name: str = "gecko", query: str | None = None, document: str | None = None) -> Template:
        """A preset with optional overrides of either side."""
        if name not in PRESETS:
            raise UserError(f"unknown format preset {name!r}: choose one of {sorted(PRESETS)} or pass templates")
        preset = PRESETS[name]
        template = cls(query or preset["query"], document or preset["document"], preset["empty_title"])
        template.check()
        return template

    @classmethod
    def from_dict(cls, saved: dict, where: str = "text_format") -> Template:
        """The inverse of `to_dict`, as read back from a checkpoint or gecko_encoder.json."""
        unknown = set(saved) - {"query", "document", "empty_title"}
        if unknown or not {"query", "document"} <= set(saved):
            raise UserError(f"{where}: a text format needs `query` and `document` templates (and optionally "
                            f"`empty_title`), got keys {sorted(saved)}")
        template = cls(**saved)
        template.check()
        return template

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def check(self) -> None:
        for side, text, fields in (("query", self.query, ("{query}",)), ("document", self.document, ("{text}",))):
            if not all(f in text for f in fields):
                raise UserError(f"{side} template {text!r} must contain {' and '.join(fields)}")

    def format_query(self, task: str, query: str) -> str:
        return self.query.format(task=task, query=query).strip()

    def format_document(self, title: str | None, text: str) -> str:
        return self.document.format(title=title or self.empty_title, text=text).strip()

    def format_symmetric(self, task: str, title: str | None, text: str) -> str:
        """A document of a symmetric set: the query format, its title joined to the text."""
        return self.format_query(task, join_title(title, text))

    def query_prefix(self, task: str) -> str | None:
        """The sentence-transformers prompt for `task`: a prefix p with p + q == format_query(task, q)
        for any q without outer whitespace; None when the template puts text after {query}."""
        return _prefix(self.format_query(task, _MARK))

    def document_prefix(self) -> str | None:
        """The prompt for an untitled document (the title becomes `empty_title`), or None."""
        return _prefix(self.format_document(None, _MARK))


def _prefix(formatted: str) -> str | None:
    head, _, tail = formatted.partition(_MARK)
    return None if tail else head


GECKO = Template()


def template_name(template: Template | None) -> str:
    """"none" (raw text), the preset it equals ("gecko", "plain"), or "custom": a label for result folders."""
    if template is None:
        return "none"
    return next((name for name, preset in PRESETS.items() if Template(**preset) == template), "custom")


@dataclass(frozen=True)
class DeclaredPrompts:
    """The prompts a sentence-transformers folder declares (`prompts`, `default_prompt_name` of its
    config_sentence_transformers.json), e.g. E5's {"query": "query: ", "document": "passage: "}."""

    prompts: dict[str, str]
    default_prompt_name: str | None = None

    def prompt(self, role: str | None, task_name: str = "", task_type: str = "") -> str:
        """The prefix of a `role` ("query", "document", or None for either side of a symmetric pair)
        text, chosen as mteb 2.x then sentence-transformers choose it.

        mteb looks for "{task name}-{role}", "{task name}", "{task type}-{role}", "{task type}", "{role}"
        (task names ignoring case here: a local folder is named "scifact", mteb's task "SciFact").
        Finding none, it calls encode_query / encode_document / encode, which fall back to "query" /
        "document", "passage", "corpus" / nothing, and then to `default_prompt_name`.
        """
        any_case = {k.lower(): k for k in self.prompts}
        for key in filter(None, [f"{task_name}-{role}" if task_name and role else "", task_name]):
            if key.lower() in any_case:
                return self.prompts[any_case[key.lower()]]
        fallback = {"query": ["query"], "document": ["document", "passage", "corpus"]}.get(role or "", [])
        for key in filter(None, [f"{task_type}-{role}" if task_type and role else "", task_type, role or "", *fallback]):
            if key in self.prompts:
                return self.prompts[key]
        return self.prompts.get(self.default_prompt_name, "") if self.default_prompt_name else ""

    def summary(self) -> str:
        """"query: 'query: ', document: 'passage: '": the non-empty prompts, for a one-line report."""
        shown = [f"{k}: {v!r}" for k, v in self.prompts.items() if v][:4]
        more = sum(1 for v in self.prompts.values() if v) - len(shown)
        default = f"; default {self.default_prompt_name!r}" if self.default_prompt_name else ""
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "") + default


def read_declared_prompts(folder: str | Path | None) -> DeclaredPrompts | None:
    """The prompts `folder`'s sentence-transformers config declares; None when it declares no non-empty
    one (sentence-transformers saves {"query": "", "document": ""} for a model that takes none)."""
    path = Path(folder) / ST_CONFIG if folder is not None else None
    if path is None or not path.is_file():
        return None
    cfg = json.loads(path.read_text(encoding="utf-8"))
    # As a loaded SentenceTransformer holds them: "query" and "document" always present, None read as "".
    # mteb then finds an empty "document" before a "passage" prompt, and so do we.
    prompts = {"query": "", "document": "", **{str(k): v or "" for k, v in (cfg.get("prompts") or {}).items()}}
    if not any(prompts.values()):
        return None
    default = cfg.get("default_prompt_name")
    return DeclaredPrompts(prompts, default if default in prompts else None)


@dataclass(frozen=True)
class InputFormat:
    """How one model's inputs are written, and why (`resolve_format`): a Template (ours), the prompts
    a sentence-transformers config declares, or raw text when both are None.

    `raw`: the untemplated text of an input when it is not the plain text, e.g. the build's
    "{task} {query}" (FRet embeds the task with the query); a declared prompt goes before it.
    """

    template: Template | None = None
    declared: DeclaredPrompts | None = None
    why: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        """"gecko", "plain" or "custom" (a template), "sentence-transformers" or "none" (raw text)."""
        if self.template is not None:
            return template_name(self.template)
        return "sentence-transformers" if self.declared is not None else "none"

    def describe(self) -> str:
        return f"{self.name} ({self.why})" if self.why else self.name

    def _prompt(self, role: str | None, task_name: str, task_type: str) -> str:
        return self.declared.prompt(role, task_name, task_type) if self.declared is not None else ""

    def query(self, task: str, text: str, *, task_name: str = "", task_type: str = "Retrieval", raw: str | None = None) -> str:
        if self.template is not None:
            return self.template.format_query(task, text)
        return self._prompt("query", task_name, task_type) + (text if raw is None else raw)

    def document(self, title: str | None, text: str, *, task_name: str = "", task_type: str = "Retrieval",
                 raw: str | None = None) -> str:
        """A retrieval document; raw text is "title text", as mteb joins a BEIR document."""
        if self.template is not None:
            return self.template.format_document(title, text)
        return self._prompt("document", task_name, task_type) + (join_title(title, text) if raw is None else raw)

    def symmetric_document(self, task: str, title: str | None, text: str, *, task_name: str = "", task_type: str = "Retrieval") -> str:
        """A document of a symmetric retrieval set (duplicate questions): our templates give it the query
        format; a declared prompt is the document's, as mteb asks for it."""
        if self.template is not None:
            return self.template.format_symmetric(task, title, text)
        return self.document(title, text, task_name=task_name, task_type=task_type)

    def symmetric(self, task: str, text: str, *, task_name: str = "", task_type: str = "STS") -> str:
        """Either side of a symmetric pair (STS, classification): mteb asks for these with no role."""
        if self.template is not None:
            return self.template.format_query(task, text)
        return self._prompt(None, task_name, task_type) + text


def resolve_format(style: str | Template | InputFormat, recorded: Template | None = None,
                   declared: DeclaredPrompts | None = None) -> InputFormat:
    """How a model's inputs are formatted: the one home of the rule, for evaluation, the in-training
    callback, the FRet build's retrieval and `gecko eval rerank`.

    style "model" takes, in order: the format the model records (`recorded`: ours, the one it was
    trained with); the prompts its sentence-transformers config declares (`declared`); raw text.
    "gecko" forces the paper's format, "none" raw text; a Template or an InputFormat is used as given.
    """
    if isinstance(style, InputFormat):
        return style
    if isinstance(style, Template):
        return InputFormat(style, why="a template given by the caller")
    if style not in PROMPT_STYLES:
        raise UserError(f"prompts={style!r}: choose one of {', '.join(PROMPT_STYLES)}")
    if style != "model":
        return InputFormat(GECKO if style == "gecko" else None, why=f"asked for (prompts {style})")
    if recorded is not None:
        return InputFormat(recorded, why="the format the model records, the one it was trained with")
    if declared is not None:
        return InputFormat(declared=declared, why=f"the prompts its {ST_CONFIG} declares: {declared.summary()}")
    return InputFormat(why="the model records no format and declares no prompts: raw text, as MTEB feeds it")
