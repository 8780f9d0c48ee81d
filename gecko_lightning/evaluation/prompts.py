"""Which task string each evaluation set gets, from the editable `configs/eval/gecko_prompts.yaml`.

The templates themselves are `gecko_lightning.text_format` (the same ones training used); this file
only maps MTEB task types and retrieval datasets to task strings. With `prompts="none"` inputs are
raw text, MTEB-style (document = "title text"), which is how published scores of prompt-free models
such as all-MiniLM-L6-v2 were produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from gecko_lightning.text_format import PROMPT_STYLES, RETRIEVAL_TASK, TASK_TYPES, join_title  # noqa: F401  (re-exported)

DEFAULT_PROMPT_MAP = Path(__file__).resolve().parents[2] / "configs" / "eval" / "gecko_prompts.yaml"
plain_document = join_title  # how MTEB joins a BEIR document for prompt-free models


@dataclass
class PromptMap:
    """Task strings per MTEB task type and per retrieval dataset, loaded from YAML."""

    task_types: dict[str, str] = field(default_factory=lambda: dict(TASK_TYPES))
    retrieval_default: str = RETRIEVAL_TASK
    retrieval: dict[str, str] = field(default_factory=dict)
    symmetric_retrieval: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PromptMap:
        path = Path(path) if path else DEFAULT_PROMPT_MAP
        if path.is_file():
            raw = yaml.safe_load(path.read_text()) or {}
        elif path == DEFAULT_PROMPT_MAP:  # installed without the repo's configs/ folder: the field defaults
            raw = {}
        else:
            raise FileNotFoundError(f"prompt map {path} not found; copy configs/eval/gecko_prompts.yaml and edit it")
        keys = [f.name for f in fields(cls)]
        if not isinstance(raw, dict):
            raise ValueError(f"prompt map {path}: expected a mapping of {', '.join(keys)}; got {type(raw).__name__}")
        unknown = set(raw) - set(keys)
        if unknown:
            raise ValueError(f"prompt map {path}: unknown keys {sorted(unknown)}")
        return cls(**raw)

    def task_type(self, kind: str) -> str:
        """Task string of an MTEB task type ("STS", "Classification", ...), else the built-in default."""
        return self.task_types.get(kind) or TASK_TYPES.get(kind, self.retrieval_default)

    def retrieval_task(self, dataset: str) -> str:
        """Task string for a retrieval dataset name (case-insensitive), else the default."""
        lowered = {k.lower(): v for k, v in self.retrieval.items()}
        return lowered.get(dataset.lower(), self.retrieval_default)

    def is_symmetric(self, dataset: str) -> bool:
        name = dataset.lower()
        return any(name.startswith(p[:-1].lower()) if p.endswith("*") else name == p.lower() for p in self.symmetric_retrieval)

    def task_for(self, task_type: str, dataset: str) -> str:
        """Task string for an MTEB task: per-dataset for retrieval-like types, per type otherwise."""
        if task_type in ("Retrieval", "Reranking", "InstructionRetrieval") or dataset.lower() in {k.lower() for k in self.retrieval}:
            return self.retrieval_task(dataset)
        return self.task_types.get(task_type, self.retrieval_default)

    def all_tasks(self) -> list[str]:
        """Every task string this map can give, sorted: one named prompt each in an export."""
        return sorted({*self.task_types.values(), *self.retrieval.values(), self.retrieval_default})
