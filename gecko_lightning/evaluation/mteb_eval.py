"""Run the real `mteb` package on a GeckoEncoder, formatting inputs as the model says (or as asked).

`GeckoMTEBEncoder` implements mteb 2.x's encoder protocol (`encode(DataLoader, *, task_metadata,
hf_split, hf_subset, prompt_type)`); mteb then scores and stores results in its own JSON format.
Task strings come from the editable `configs/eval/gecko_prompts.yaml` (see prompts.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.evaluation.prompts import PromptMap
from gecko_lightning.evaluation.runner import embed, input_format, truncate


class MTEBDataUnavailable(RuntimeError):
    """A task's data is neither cached nor downloadable (offline machine)."""


def _make_wrapper_class():
    """Build the wrapper lazily so importing this module does not import mteb (slow)."""
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    class GeckoMTEBEncoder(AbsEncoder):
        """A GeckoEncoder seen by mteb. prompts="model" formats inputs as the model says (the format it
        records, else its declared sentence-transformers prompts per task and role, else raw text;
        `text_format.resolve_format`), "gecko" with the paper's; "none" passes text as is.

        dim: evaluate a Matryoshka prefix (truncate + renormalise); None keeps the full width.
        """

        def __init__(self, encoder: GeckoEncoder, name: str, prompts: str = "model", prompt_map: PromptMap | None = None,
                     dim: int | None = None, batch_size: int = 64) -> None:
            self.model, self.prompts, self.dim, self.batch_size = encoder, prompts, dim, batch_size
            self.format = input_format(prompts, encoder)
            self.prompt_map = prompt_map or PromptMap.load()
            self.mteb_model_meta = ModelMeta.create_empty({
                "name": name, "revision": f"prompts-{self.format.name}" + (f"-dim{dim}" if dim else ""),
                "embed_dim": dim or encoder.dim, "max_tokens": encoder.max_length,
                "similarity_fn_name": ScoringFunction.COSINE, "framework": ["PyTorch"],
            })

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
            texts = [t for batch in inputs for t in self._format(batch, task_metadata, prompt_type)]
            emb = embed(self.model, texts, self.batch_size, show_progress=False)  # (N, D)
            return truncate(emb, self.dim).numpy()

        def _format(self, batch: dict, task_metadata, prompt_type) -> list[str]:
            texts, fmt = list(batch["text"]), self.format
            name, kind = task_metadata.name, task_metadata.type
            task = self.prompt_map.task_for(kind, name)
            role = str(getattr(prompt_type, "value", prompt_type)) if prompt_type is not None else None
            if role is None:  # symmetric tasks (STS, classification, clustering): mteb names no role
                return [fmt.symmetric(task, t, task_name=name, task_type=kind) for t in texts]
            if role == "query":
                return [fmt.query(task, t, task_name=name, task_type=kind) for t in texts]
            if fmt.template is None:  # mteb has joined "title text" already, as raw text wants it
                return [fmt.document(None, t, task_name=name, task_type=kind, raw=t) for t in texts]
            titles, bodies = batch.get("title"), batch.get("body")
            if bodies is not None:  # mteb joins "title text"; the template wants the fields apart
                titles = titles if titles is not None else [None] * len(bodies)
            else:
                titles, bodies = [None] * len(texts), texts
            if self.prompt_map.is_symmetric(name):
                return [fmt.symmetric_document(task, t, b) for t, b in zip(titles, bodies)]
            return [fmt.document(t, b) for t, b in zip(titles, bodies)]

    return GeckoMTEBEncoder


def resolve_tasks(names: Sequence[str]) -> list:
    """mteb task objects for task names and/or benchmark names, with a clear error for unknown names."""
    import mteb

    tasks = []
    for name in names:
        try:
            tasks.extend(mteb.get_benchmark(name).tasks)
            continue
        except (KeyError, ValueError):
            pass
        try:
            tasks.extend(mteb.get_tasks(tasks=[name]))
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"unknown MTEB task or benchmark {name!r}; list them with "
                "`python -c \"import mteb; print([t.metadata.name for t in mteb.get_tasks()])\"` "
                "or `python -c \"import mteb; print([b.name for b in mteb.get_benchmarks()])\"`"
            ) from e
    return tasks


def _looks_offline(exc: BaseException) -> bool:
    """True when an exception (or its cause chain) says the Hub could not be reached or is disabled."""
    words = ("offline", "connection", "resolve", "not found in the cached", "couldn't reach", "cannot find the requested files",
             "localentrynotfound", "max retries", "network", "timed out", "hf_hub_offline", "no such file")
    while exc is not None:
        text = f"{type(exc).__name__} {exc}".lower()
        if any(w in text for w in words):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def offline_message(task: str) -> str:
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return (
        f"MTEB data for task {task!r} is not cached (HF_HOME={hf_home}) and the Hugging Face Hub cannot be reached. "
        "On a machine with network, pre-download it with "
        f"`python -c \"import mteb; mteb.get_task('{task}').load_data()\"` using the same HF_HOME, "
        "copy that cache folder here and set HF_HOME to it (and HF_HUB_OFFLINE=1); "
        "or evaluate local files with --beir/--sts/--classification."
    )


def run_mteb(encoder: GeckoEncoder, names: Sequence[str], output_folder: str | Path, name: str = "gecko/local",
             prompts: str = "model", prompt_map: PromptMap | None = None, dims: Sequence[int | None] = (None,),
             batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Evaluate every task at every dim; results go to `output_folder` in mteb's format.

    Returns {"<task>[@dim]": {"main_score": x100}} for the printed table.
    """
    return evaluate_tasks(encoder, resolve_tasks(names), output_folder, name, prompts, prompt_map, dims, batch_size)


def evaluate_tasks(encoder: GeckoEncoder, tasks: Sequence, output_folder: str | Path, name: str = "gecko/local",
                   prompts: str = "model", prompt_map: PromptMap | None = None, dims: Sequence[int | None] = (None,),
                   batch_size: int = 64) -> dict[str, dict[str, float]]:
    """`run_mteb` for already-built mteb task objects (tests pass mteb's mock tasks)."""
    import mteb

    wrapper_cls = _make_wrapper_class()
    summary = {}
    for dim in dims:
        model = wrapper_cls(encoder, name, prompts, prompt_map, dim, batch_size)
        for task in tasks:
            try:
                result = mteb.evaluate(model, task, cache=mteb.ResultCache(output_folder), overwrite_strategy="always")
            except Exception as e:  # noqa: BLE001 - mteb wraps hub/datasets errors in many types
                if _looks_offline(e):
                    raise MTEBDataUnavailable(offline_message(task.metadata.name)) from e
                raise
            for tr in result.task_results:
                summary[tr.task_name + (f"@{dim}" if dim else "")] = {"main_score": 100 * tr.get_score()}
    return summary
