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

No torch here: the data builder imports this module before any model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
# How evaluation formats its inputs: the model's own Template (the one it was trained with, else
# gecko), the gecko preset whatever the model says, or raw text (MTEB-style, prompt-free models).
PROMPT_STYLES = ("model", "gecko", "none")
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


def resolve_template(style: str | Template, model_format: Template | None = None) -> Template | None:
    """The Template an evaluation formats with; None means raw text.

    style: one of PROMPT_STYLES, or a Template. "model" is the model's own format (`model_format`,
    what it was trained with) and falls back to gecko for a model that records none.
    """
    if isinstance(style, Template):
        return style
    if style not in PROMPT_STYLES:
        raise UserError(f"prompts={style!r}: choose one of {', '.join(PROMPT_STYLES)}")
    if style == "none":
        return None
    return model_format if style == "model" and model_format is not None else GECKO
