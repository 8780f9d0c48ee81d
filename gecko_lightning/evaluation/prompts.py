"""Gecko's input format for evaluation, driven by the editable `configs/eval/gecko_prompts.yaml`.

Queries become `task: {task} | query: {text}`, retrieval documents `title: {title} | text: {text}`,
and symmetric tasks use the query format on both sides (paper, Table 7). With `prompts="none"` every
formatter returns plain text, MTEB-style (document = "title text"), which is how published scores of
prompt-free models such as all-MiniLM-L6-v2 were produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_PROMPT_MAP = Path(__file__).resolve().parents[2] / "configs" / "eval" / "gecko_prompts.yaml"
# Used only when the package is installed without the repo's configs/ folder.
_FALLBACK = {"task_types": {"Classification": "classification", "STS": "sentence similarity",
                            "PairClassification": "sentence similarity", "Clustering": "search result"},
             "retrieval_default": "search result", "retrieval": {}, "symmetric_retrieval": []}
PROMPT_STYLES = ("gecko", "none")


def format_query(task: str, text: str) -> str:
    return f"task: {task} | query: {text}"


def format_document(title: str | None, text: str) -> str:
    return f"title: {title or 'none'} | text: {text}"


def plain_document(title: str | None, text: str) -> str:
    """How MTEB joins a BEIR document for prompt-free models."""
    return f"{title} {text}".strip() if title else text.strip()


@dataclass
class PromptMap:
    """Task strings per MTEB task type and per retrieval dataset, loaded from YAML."""

    task_types: dict[str, str]
    retrieval_default: str = "search result"
    retrieval: dict[str, str] = field(default_factory=dict)
    symmetric_retrieval: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PromptMap:
        path = Path(path) if path else DEFAULT_PROMPT_MAP
        if path.is_file():
            raw = yaml.safe_load(path.read_text()) or {}
        elif path == DEFAULT_PROMPT_MAP:
            raw = _FALLBACK
        else:
            raise FileNotFoundError(f"prompt map {path} not found; copy configs/eval/gecko_prompts.yaml and edit it")
        unknown = set(raw) - {"task_types", "retrieval_default", "retrieval", "symmetric_retrieval"}
        if unknown:
            raise ValueError(f"prompt map {path}: unknown keys {sorted(unknown)}")
        return cls(**raw)

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
