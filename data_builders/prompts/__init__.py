"""Versioned prompt files (`data_builders/prompts/*.yaml`): rendering and output parsing.

A prompt's version id is its `version` field plus a hash of the file, so editing a file without
bumping the version still invalidates its cache entries. The id goes into cache keys and the manifest.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..llm import GenRequest

PROMPT_DIR = Path(__file__).parent  # the versioned prompt files live beside this module


@dataclass
class Prompt:
    name: str
    version: str
    """`<version field>@<8 hex of the file's sha256>`."""
    spec: dict[str, Any]


def load_prompt(name: str, required: tuple[str, ...] = ()) -> Prompt:
    """A prompt by file stem in `data_builders/prompts/` or by path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROMPT_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"prompt {name!r} not found (looked for {path}); shipped prompts: {known}")
    raw = path.read_bytes()
    spec = yaml.safe_load(raw)
    missing = [k for k in ("version", *required) if k not in spec]
    if missing:
        raise ValueError(f"prompt file {path} lacks field(s) {missing}")
    return Prompt(path.stem, f"{spec['version']}@{hashlib.sha256(raw).hexdigest()[:8]}", spec)


def _content(text: str) -> set[str]:
    """Lower-cased words of 4+ characters (all words when none is that long)."""
    words = re.findall(r"\w+", text.lower())
    return {w for w in words if len(w) >= 4} or set(words)


def _repeats(text: str, n: int = 3) -> bool:
    """True when some word n-gram occurs twice: the looping output of a small LLM."""
    words = norm(text).split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def passage_text(title: str | None, text: str) -> str:
    return f"{title}. {text}" if title else text


def norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


class GenerationPrompt:
    """Builds one few-shot request per seed and parses the answer back into (task, query)."""

    def __init__(self, prompt: Prompt, shots: int, task_types: list[str] | None = None) -> None:
        self.prompt, self.spec = prompt, prompt.spec
        self.shots = shots
        self.task_types: dict[str, str] = self.spec["task_types"]
        if task_types:  # restrict the sampled types, e.g. to the target domain's tasks
            unknown = sorted(set(task_types) - set(self.task_types))
            if unknown:
                raise ValueError(f"generate.task_types {unknown} are not in prompt {prompt.name!r}: {sorted(self.task_types)}")
            self.task_types = {t: self.task_types[t] for t in task_types}
        self.asks: dict[str, str] = self.spec.get("asks", {})
        self.lead_ins = [re.compile(p, re.I) for p in self.spec.get("strip_prefixes", [])]
        self.examples: list[dict[str, str]] = self.spec["examples"]
        self.example_queries = {norm(e["query"]) for e in self.examples}
        self.example_words = [_content(e["query"] + " " + e["passage"]) for e in self.examples]
        if shots > len(self.examples):
            raise ValueError(f"generate.shots={shots} but prompt {prompt.name!r} has {len(self.examples)} examples")

    def task_type_for(self, seed_id: str, seed: int) -> str:
        return random.Random(f"{seed}:type:{seed_id}").choice(sorted(self.task_types))

    def request(self, seed_id: str, passage: str, seed: int) -> tuple[GenRequest, str]:
        """(request, task type): the shots are sampled per seed, one of the target type first."""
        task_type = self.task_type_for(seed_id, seed)
        rng = random.Random(f"{seed}:shots:{seed_id}")
        if self.spec.get("same_type_first", True):
            same = [e for e in self.examples if e["task_type"] == task_type]
            others = [e for e in self.examples if e["task_type"] != task_type]
            shots = (same[:1] + rng.sample(others, len(others)))[: self.shots]
        else:
            shots = rng.sample(self.examples, self.shots)
        rng.shuffle(shots)
        blocks = {
            "instruction": [self.spec["instruction"].format(
                task_type=task_type, task_description=self.task_types[task_type], ask=self.asks.get(task_type, task_type)
            ).strip()],
            "examples": [self.spec["example"].format(**e).strip() for e in shots],
            "target": [self.spec["target"].format(passage=passage).strip()],
        }
        parts = [p for name in self.spec.get("layout", ["instruction", "examples", "target"]) for p in blocks[name]]
        prefix = self.spec.get("prefix", "").format(task_description=self.task_types[task_type])
        return GenRequest("\n\n".join(parts), prefix), task_type

    def copies_example(self, query: str, passage: str) -> bool:
        """True when the query echoes a few-shot example (its query or passage) more than the target passage.

        Exact echoes are the common tiny-LLM failure; paraphrased echoes ("What is the way to factory
        reset your router?") are caught by content-word overlap with any example.
        """
        if norm(query) in self.example_queries:
            return True
        words = _content(query)
        own = len(words & _content(passage))
        return any(len(words & ex) >= 0.6 * len(words) and len(words & ex) > own for ex in self.example_words)

    def parse(self, prefix: str, output: str, task_type: str, passage: str = "") -> tuple[str | None, str | None, str | None]:
        """(task, query, failure reason); failures: no_query, repetitive, copied_example, too_long."""
        text = prefix + output
        query = re.search(r"(?im)^\W*query\W*:[ \t]*(.+)$", text)
        if not query or not norm(query.group(1)):
            return None, None, "no_query"
        q = query.group(1).strip().strip("\"'*` ")
        for lead_in in self.lead_ins:  # "The passage supports the claim that X" -> "X"
            q = lead_in.sub("", q, count=1).strip().strip("\"'*` ")
        if not norm(q):
            return None, None, "no_query"
        if self.spec.get("reject_repetition") and _repeats(q):
            return None, None, "repetitive"
        if self.copies_example(q, passage):  # the tiny-LLM failure: echoing a few-shot example
            return None, None, "copied_example"
        if len(q.split()) > 64:
            return None, None, "too_long"
        task = re.search(r"(?im)^\W*task\W*:[ \t]*(.+)$", text)
        t = task.group(1).strip().strip("\"'*` ") if task else ""
        if not norm(t) or norm(t) == norm(q):
            t = self.task_types[task_type]  # a missing task line still leaves a usable query
        return t, q, None


def extractive_query(passage: str) -> str:
    """The fallback query for smoke tests: the first 12 words of the passage's first sentence."""
    first = re.split(r"(?<=[.!?])\s", passage.strip(), maxsplit=1)[0]
    return " ".join(first.split()[:12])


EXTRACTIVE_TASK = "Given a sentence, retrieve the passage it comes from"
