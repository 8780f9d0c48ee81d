"""Academic and classification datasets -> schema records (the paper's unified format).

Each converter reads its input through `load_table` (Hub name online; `save_to_disk` folder or
local files offline) and yields `Record`s; `convert()` writes them plus a manifest. Rows that
cannot make a record (no positive, a class of one) are counted in `dropped`, never lost silently.

    name            input columns (Hub default)                       record
    qa / nq         query, passage [, title, label, negative]         question -> passage
    hotpotqa        question, context, supporting_facts               question -> supporting paragraph
    medmcqa         question, opa..opd, cop, exp                      question -> answer + explanation
    fever / beir    corpus, queries, qrels (BEIR folder or mteb/...)  query -> relevant document
    snli / mnli     premise, hypothesis, label                        premise -> entailment, contradiction
    miracl          query, positive_passages, negative_passages       question -> passage (multilingual)
    classification  text, label                                       text -> same label, other label
    pairs           two text columns [, label]                        text -> duplicate (symmetric)
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gecko_lightning.data.hf_source import TableOptions, load_table
from gecko_lightning.data.schema import Passage, Record

QA_TASK = "Given a question, retrieve a passage that answers it"
TASKS = {
    "qa": QA_TASK,
    "nq": "Given a question, retrieve Wikipedia passages that answer the question",
    "hotpotqa": "Given a multi-hop question, retrieve documents that can help answer the question",
    "fever": "Given a claim, retrieve documents that support or refute the claim",
    "medmcqa": "Given a medical question, retrieve the passage that answers it",
    "miracl": "Given a question, retrieve Wikipedia passages that answer the question",
    "beir": "Given a query, retrieve relevant documents",
    "snli": "semantic similarity",
    "mnli": "semantic similarity",
    "pairs": "semantic similarity",
    "classification": "classification",
}
NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}  # the HF snli / multi_nli ids


@dataclass
class ConvertSpec:
    """Where the input is and how to read it; the CLI fills it from flags."""

    kind: str
    """The converter name (`nli`, `beir`, ...): picks the default task string."""
    source: str
    name: str = ""
    """The records' `source` field; defaults to `kind`."""
    split: str = "train"
    config: str | None = None
    task: str | None = None
    seed: int = 0
    columns: dict[str, str] = field(default_factory=dict)
    table: TableOptions = field(default_factory=TableOptions)
    dropped: Counter = field(default_factory=Counter)

    @property
    def source_name(self) -> str:
        return self.name or self.kind

    def column(self, key: str, default: str | None) -> str | None:
        return self.columns.get(key, default)

    def load(self, source: str | None = None, split: str | None = None, config: str | None = None):
        return load_table(source or self.source, split or self.split, config or self.config, self.table)

    def record(self, n: int, query: str, positive: Passage, negative: Passage | None = None, **kw) -> Record:
        return Record(
            id=f"{self.source_name}-{self.split}-{n}", source=self.source_name,
            task=self.task or TASKS.get(self.kind, QA_TASK),
            query=query, positive=positive, negative=negative, **kw,
        )


def _text(value) -> str | None:
    """A clean string, or None for missing / NaN / blank cells."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


# ---- question answering ---------------------------------------------------------------------
def convert_qa(spec: ConvertSpec) -> Iterator[Record]:
    """Generic QA. With a label column, rows are grouped by question: label 1 = positive, else a negative."""
    qc, tc = spec.column("query", "question"), spec.column("text", "passage")
    title_c, label_c, neg_c = spec.column("title", None), spec.column("label", None), spec.column("negative", None)
    groups: dict[str, dict[str, list]] = defaultdict(lambda: {"pos": [], "neg": []})
    n = 0
    for row in spec.load():
        query, text = _text(row.get(qc)), _text(row.get(tc))
        if query is None or text is None:
            spec.dropped["missing query or passage"] += 1
            continue
        passage = Passage(text, _text(row.get(title_c)) if title_c else None)
        if label_c is None:
            negative = Passage(_text(row[neg_c])) if neg_c and _text(row.get(neg_c)) else None
            yield spec.record(n, query, passage, negative)
            n += 1
            continue
        groups[query]["pos" if str(row.get(label_c)).strip() in ("1", "True", "true") else "neg"].append(passage)
    yield from _grouped(spec, groups, symmetric=False)


def _grouped(spec: ConvertSpec, groups: dict, symmetric: bool) -> Iterator[Record]:
    """One record per positive of each anchor; the negative is a random one of the same anchor."""
    rng, n = random.Random(spec.seed), 0
    for query, g in groups.items():
        if not g["pos"]:
            spec.dropped["no positive for the query"] += 1
            continue
        for positive in g["pos"]:
            negative = rng.choice(g["neg"]) if g["neg"] else None
            yield spec.record(n, query, positive, negative, symmetric=symmetric)
            n += 1


def convert_hotpotqa(spec: ConvertSpec) -> Iterator[Record]:
    """Question -> each supporting paragraph; negative: a distractor paragraph of the same question."""
    rng, n = random.Random(spec.seed), 0
    for row in spec.load():
        ctx, support = row["context"], set(row["supporting_facts"]["title"])
        paragraphs = {
            t: Passage(" ".join(s.strip() for s in sents), t) for t, sents in zip(ctx["title"], ctx["sentences"])
        }
        distractors = [p for t, p in paragraphs.items() if t not in support]
        for title in dict.fromkeys(row["supporting_facts"]["title"]):
            if title not in paragraphs:
                spec.dropped["supporting title missing from context"] += 1
                continue
            yield spec.record(n, row["question"], paragraphs[title], rng.choice(distractors) if distractors else None)
            n += 1


def convert_medmcqa(spec: ConvertSpec) -> Iterator[Record]:
    """Question -> correct option plus explanation; negative: a wrong option."""
    rng, n = random.Random(spec.seed), 0
    for row in spec.load():
        options = [_text(row.get(k)) for k in ("opa", "opb", "opc", "opd")]
        cop = row.get("cop")
        if not isinstance(cop, int) or not 0 <= cop < 4 or options[cop] is None or not _text(row.get("question")):
            spec.dropped["no valid answer option"] += 1
            continue
        answer = options[cop] + (f". {_text(row.get('exp'))}" if _text(row.get("exp")) else "")
        wrong = [o for i, o in enumerate(options) if i != cop and o]
        yield spec.record(n, row["question"].strip(), Passage(answer), Passage(rng.choice(wrong)) if wrong else None)
        n += 1


def convert_passages(spec: ConvertSpec) -> Iterator[Record]:
    """Tevatron/MIRACL layout: query + lists of positive and negative passages ({docid, title, text})."""
    rng, n = random.Random(spec.seed), 0
    for row in spec.load():
        positives = _passages(row["positive_passages"])
        negatives = _passages(row.get("negative_passages") or [])
        if not positives or not _text(row.get("query")):
            spec.dropped["no positive passage"] += 1
            continue
        meta = {"language": spec.config} if spec.config else {}
        negative = rng.choice(negatives) if negatives else None
        yield spec.record(n, row["query"].strip(), positives[0], negative, meta=meta)
        n += 1


def _passages(items: list[dict]) -> list[Passage]:
    return [Passage(p["text"], _text(p.get("title"))) for p in items if _text(p.get("text"))]


# ---- BEIR retrieval (corpus, queries, qrels) ------------------------------------------------------
def _beir_tables(spec: ConvertSpec):
    root = Path(spec.source)
    if root.is_dir():
        qrels = root / "qrels" / f"{spec.split}.tsv"
        if not qrels.is_file():
            raise FileNotFoundError(
                f"BEIR folder {root} has no qrels/{spec.split}.tsv: pass --split with an existing one"
            )
        return spec.load(str(root / "corpus.jsonl")), spec.load(str(root / "queries.jsonl")), spec.load(str(qrels))
    # Hub: the mteb/<name> layout has configs corpus, queries and default (the qrels)
    return (spec.load(config="corpus", split="corpus"), spec.load(config="queries", split="queries"),
            spec.load(config="default"))


def convert_beir(spec: ConvertSpec) -> Iterator[Record]:
    """Every qrel with score > 0 of the split -> (query, relevant document); no negative."""
    corpus_t, queries_t, qrels_t = _beir_tables(spec)
    corpus = {str(r["_id"]): Passage(r["text"], _text(r.get("title"))) for r in corpus_t if _text(r.get("text"))}
    queries = {str(r["_id"]): r["text"] for r in queries_t}
    n = 0
    for row in qrels_t:
        qid, did = str(row["query-id"]), str(row["corpus-id"])
        if float(row.get("score", 1)) <= 0:
            continue
        if qid not in queries or did not in corpus:
            spec.dropped["qrel names an unknown query or document"] += 1
            continue
        yield spec.record(n, queries[qid], corpus[did], meta={"query_id": qid, "doc_id": did})
        n += 1


# ---- NLI, pairs, classification (symmetric) --------------------------------------------------------
def _nli_table(spec: ConvertSpec) -> Iterable[dict]:
    """HF columns (premise, hypothesis, label), or the SentEval layout s1.<split>, s2.<split>, labels.<split>."""
    root = Path(spec.source)
    if root.is_dir() and (root / f"s1.{spec.split}").is_file():
        from datasets import load_dataset

        files = [str(root / f"{c}.{spec.split}") for c in ("s1", "s2", "labels")]
        cols = [load_dataset("text", data_files=f, split="train")["text"] for f in files]
        return ({"premise": p, "hypothesis": h, "label": lab} for p, h, lab in zip(*cols))
    return spec.load()


def convert_nli(spec: ConvertSpec) -> Iterator[Record]:
    """Premise -> entailed hypothesis (positive), contradicted hypothesis (negative); symmetric."""
    groups: dict[str, dict[str, list]] = defaultdict(lambda: {"pos": [], "neg": []})
    for row in _nli_table(spec):
        label = row["label"]
        label = NLI_LABELS.get(label, label) if isinstance(label, int) else str(label).strip()
        premise, hypothesis = _text(row["premise"]), _text(row["hypothesis"])
        if premise is None or hypothesis is None or label not in ("entailment", "contradiction"):
            continue  # neutral pairs and unlabeled rows (-1 in HF snli) make no record
        groups[premise]["pos" if label == "entailment" else "neg"].append(Passage(hypothesis))
    yield from _grouped(spec, groups, symmetric=True)


def convert_pairs(spec: ConvertSpec) -> Iterator[Record]:
    """Duplicate pairs (e.g. Quora): text a -> text b, keeping rows whose label is 1 when a label column is set."""
    ac, bc, label_c = spec.column("query", "question1"), spec.column("text", "question2"), spec.column("label", None)
    n = 0
    for row in spec.load():
        if label_c and str(row.get(label_c)).strip() not in ("1", "True", "true"):
            continue
        a, b = _text(row.get(ac)), _text(row.get(bc))
        if a is None or b is None:
            spec.dropped["missing text"] += 1
            continue
        yield spec.record(n, a, Passage(b), symmetric=True)
        n += 1


def convert_classification(spec: ConvertSpec) -> Iterator[Record]:
    """Text -> another text of the same label (positive) and one of another label (negative).

    `meta.label` keeps the class so `false_negatives: mask` can drop same-class in-batch negatives.
    """
    tc, lc = spec.column("text", "text"), spec.column("label", None)
    table = spec.load()
    lc = lc or next((c for c in ("label", "label_name", "category", "intent") if c in table.column_names), None)
    if lc is None:
        raise ValueError(f"no label column among {table.column_names}: pass --label-column")
    rows = [(t, str(row[lc])) for row in table if (t := _text(row.get(tc))) is not None]
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        by_label[label].append(text)
    if len(by_label) < 2:
        raise ValueError(f"column {lc!r} has {len(by_label)} label(s); classification needs at least 2")
    rng, labels = random.Random(spec.seed), sorted(by_label)
    for n, (text, label) in enumerate(rows):
        same = by_label[label]
        if len(same) < 2:
            spec.dropped["label with a single text"] += 1
            continue
        positive = rng.choice([t for t in same if t != text] or same)
        other = rng.choice([lab for lab in labels if lab != label])
        yield spec.record(n, text, Passage(positive), Passage(rng.choice(by_label[other])), symmetric=True,
                          meta={"label": label})


@dataclass(frozen=True)
class Converter:
    fn: Callable[[ConvertSpec], Iterator[Record]]
    hub: str | None = None
    """Hub dataset used when no --source is given."""
    config: str | None = None
    columns: dict[str, str] = field(default_factory=dict)


CONVERTERS: dict[str, Converter] = {
    "qa": Converter(convert_qa),
    "nq": Converter(
        convert_qa, "sentence-transformers/natural-questions", columns={"query": "query", "text": "answer"}
    ),
    "hotpotqa": Converter(convert_hotpotqa, "hotpotqa/hotpot_qa", "distractor"),
    "fever": Converter(convert_beir, "mteb/fever"),
    "medmcqa": Converter(convert_medmcqa, "openlifescienceai/medmcqa"),
    "miracl": Converter(convert_passages, "miracl/miracl", "en"),
    "beir": Converter(convert_beir),
    "snli": Converter(convert_nli, "stanfordnlp/snli"),
    "mnli": Converter(convert_nli, "nyu-mll/multi_nli"),
    "pairs": Converter(convert_pairs),
    "classification": Converter(convert_classification),
}
