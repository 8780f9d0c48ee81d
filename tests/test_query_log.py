"""A user's own queries (corpus.queries) and the candidate lists a fit distils: the query files, the
build's rows, records, test split and list passages, and the DataModule that gives them back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from data_builders import cli
from data_builders.corpus.queries import read_queries
from gecko_lightning.data import FRetDataModule, MixtureDataModule
from gecko_lightning.data.schema import LIST_PASSAGES, read_manifest, read_records
from gecko_lightning.errors import UserError
from gecko_lightning.text_format import Template

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"
CORPUS = ROOT / "configs" / "assets" / "tiny_corpus" / "corpus.jsonl"
QUERIES = ["who is a professor of chemical engineering", "what football team did drexel have in 1924",
           "when was the first bridge built", "which album came out in 1999", "where is the capital of france",
           "who invented the telephone", "what is organic bioelectronics", "how tall is the tallest tower"]


def test_the_three_layouts(tmp_path):
    (tmp_path / "q.txt").write_text("first query\n\n  second query  \n")
    (tmp_path / "q.tsv").write_text("query-id\ttext\na1\tfirst query\nb2\tsecond\tquery with a tab\n")
    (tmp_path / "q.jsonl").write_text('{"_id": "x", "text": "first query"}\n\n{"id": 7, "text": "second query"}\n')
    assert read_queries(str(tmp_path / "q.txt")) == [("1", "first query", 1), ("3", "second query", 3)]
    assert read_queries(str(tmp_path / "q.tsv")) == [("a1", "first query", 2), ("b2", "second\tquery with a tab", 3)]
    assert read_queries(str(tmp_path / "q.jsonl")) == [("x", "first query", 1), ("7", "second query", 3)]


@pytest.mark.parametrize("name, text, message", [
    ("empty.txt", "\n  \n", "holds no query"),
    ("dup.tsv", "a\tone\nb\ttwo\na\tthree\n", "query id 'a' appears on lines 1 and 3"),
    ("bad.jsonl", '{"_id": "a"}\n', "a query needs `_id` (or `id`) and a non-empty `text`"),
    ("missing.txt", None, "no such file"),
])
def test_bad_query_files_are_one_line_exit_2(tmp_path, capsys, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    code = cli.main(["fret", "--config", str(FAKE), f"--corpus.queries={tmp_path / name}", "--output_dir", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO")]
    assert code == 2 and len(err) == 1 and message in err[0], err


@pytest.fixture(scope="module")
def log_build(tmp_path_factory) -> Path:
    """Given queries only (num_seeds unset), the fake LLM, 8 candidates, a third held out."""
    folder = tmp_path_factory.mktemp("log")
    (folder / "log.txt").write_text("\n".join(QUERIES + ["one two three four five six seven"]) + "\n")
    out = folder / "build"
    assert cli.main(["fret", "--config", str(FAKE), f"--corpus.queries={folder / 'log.txt'}", "--corpus.num_seeds=null",
                     "--corpus.max_query_tokens=5", "--test_split.fraction=0.34", "--select.positive=ql_top1",
                     "--output_dir", str(out)]) == 0
    return out


def test_given_queries_are_built_like_generated_ones(log_build):
    rows = [json.loads(line) for line in (log_build / "stages" / "generate.jsonl").read_text().splitlines()]
    assert [r["query_id"] for r in rows] == [str(i) for i in range(1, 10)]  # no generated row
    assert all(r["seed_id"] is None and r["task_type"] == "given" for r in rows)
    assert rows[-1]["query"] == "one two three four five"  # the fake backend counts words
    manifest = read_manifest(log_build)
    assert "generate" not in manifest["prompt_versions"] and manifest["llm_calls"]["generate"] == 0
    assert manifest["stages"]["generate"]["given_queries_cut"] == 7  # all but the two 4-word queries exceed 5 words
    test = [json.loads(line) for line in (log_build / "test" / "queries.jsonl").read_text().splitlines()]
    records, _ = read_records(log_build)
    assert len(test) + len(records) + sum(manifest["test_split"]["training_records_dropped"].values()) == 9
    assert test and records
    rerank = {r["query_id"]: r for r in map(json.loads, (log_build / "stages" / "rerank.jsonl").read_text().splitlines())}
    qrels = [line.split("\t") for line in (log_build / "test" / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    for t in test:  # each held-out query's label is its QL top 1, as `select.positive: ql_top1` chose
        qid = t["metadata"]["query_id"]
        best = min(rerank[qid]["candidates"], key=lambda c: (-c["ql"], c["retrieval_rank"]))["id"]
        assert [q for q in qrels if q[0] == t["_id"]] == [[f"fret-query:{qid}", best, "2"]]
    for r in records:
        assert r.id == f"fret-query:{r.meta['query_id']}" and r.meta["seed_id"] is None
        assert len(r.meta["candidates"]) == 8  # retrieve.top_n, no seed added


def test_generated_and_given_queries_mix(tmp_path):
    (tmp_path / "log.txt").write_text("\n".join(QUERIES[:3]) + "\n")
    out = tmp_path / "mixed"
    assert cli.main(["fret", "--config", str(FAKE), f"--corpus.queries={tmp_path / 'log.txt'}", "--corpus.num_seeds=5",
                     "--output_dir", str(out)]) == 0
    records, _ = read_records(out)
    given = [r for r in records if r.meta["seed_id"] is None]
    assert len(given) == 3 and len(records) > 3
    assert read_manifest(out)["stages"]["select"]["given_records"] == 3


def test_list_passages_hold_every_candidate_once(log_build):
    corpus = {r["_id"]: r for r in map(json.loads, CORPUS.read_text().splitlines())}
    rows = [json.loads(line) for line in (log_build / LIST_PASSAGES).read_text().splitlines()]
    named = {c["id"] for r in read_records(log_build)[0] for c in r.meta["candidates"]}
    assert sorted(r["id"] for r in rows) == sorted(named)
    truncated = {r["id"]: r for r in map(json.loads, (log_build / "stages" / "corpus.jsonl").read_text().splitlines())}
    for row in rows:  # the passages as the build's stages saw them (cut to max_passage_tokens)
        assert row == {"id": row["id"], "title": truncated[row["id"]]["title"], "text": truncated[row["id"]]["text"]}
        assert corpus[row["id"]]["text"].startswith(row["text"][:20])
    assert read_manifest(log_build)["lists"]["passages"] == len(rows)


def _datamodule(path, **kw) -> FRetDataModule:
    dm = FRetDataModule(str(path), tokenizer=str(ROOT / "configs" / "assets" / "tiny-bert"), batch_size=2, **kw)
    dm.setup()
    return dm


def test_rows_get_their_lists_positive_first(log_build):
    dm = _datamodule(log_build, list_size=4, teacher_score="rc")
    assert dm.train_dataset[0].candidates == ()  # nothing until a distillation term asks
    dm.attach_lists()
    passages = {r["id"]: r for r in map(json.loads, (log_build / LIST_PASSAGES).read_text().splitlines())}
    template = Template.from_preset("gecko")
    for i, rec in enumerate(read_records(log_build)[0]):
        cands = rec.meta["candidates"]
        order = [c for c in cands if c["id"] == rec.meta["positive_id"]] + [c for c in cands if c["id"] != rec.meta["positive_id"]]
        ex = dm.train_dataset[i]
        assert ex.candidates == tuple(template.format_document(passages[c["id"]]["title"], passages[c["id"]]["text"]) for c in order[:4])
        assert ex.teacher == tuple(c["rc"] for c in order[:4])
        assert ex.candidates[0] == ex.positive


def test_the_collator_tokenizes_each_list_passage_once(log_build):
    """Each list slot names a row of [positives, negatives, candidates] holding its own text; a passage
    that is a positive or a negative of the batch is not tokenized again, and no other passage twice."""
    dm = _datamodule(log_build)
    dm.attach_lists()
    examples = [dm.train_dataset[i] for i in range(len(dm.train_dataset))][:3]
    batch = dm._collator()(examples)
    negatives = [e.negative for e in examples]
    assert all(negatives)  # the build gives every record one
    pooled = [e.positive for e in examples] + negatives
    others = list(dict.fromkeys(t for e in examples for t in e.candidates if t not in pooled))
    assert batch["candidates"]["input_ids"].shape[0] == len(others)
    rows = pooled + others
    for row, e in enumerate(examples):
        assert batch["list_index"][row, 0] == row  # the list's first passage is the row's own positive
        for slot, (text, score) in enumerate(zip(e.candidates, e.teacher)):
            assert rows[batch["list_index"][row, slot]] == text
            assert batch["list_scores"][row, slot].item() == pytest.approx(score, rel=1e-6)
    assert any(len(examples) <= i < 2 * len(examples) for i in batch["list_index"].flatten().tolist())  # a negative reused
    encode = dm._collator()._encode
    for i, text in enumerate(others):
        alone = encode([text], dm.doc_max_length)["input_ids"][0]  # (T,)
        assert torch.equal(batch["candidates"]["input_ids"][i, : len(alone)], alone)
        assert batch["candidates"]["attention_mask"][i].sum() == len(alone)


def test_a_build_from_before_lists_trains_as_today_and_distill_names_the_fix(log_build, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(log_build, old)
    shutil.rmtree(old / "candidates")
    dm = _datamodule(old)
    batch = dm._collator()([dm.train_dataset[0], dm.train_dataset[1]])
    assert "candidates" not in batch and "list_index" not in batch
    with pytest.raises(UserError, match=r"candidates/passages.jsonl is missing .* gecko build fret --from"):
        dm.attach_lists()


def test_distill_without_any_list_is_one_line(tmp_path):
    dm = MixtureDataModule([{"path": str(ROOT / "configs" / "assets" / "tiny_snli")}],
                           tokenizer=str(ROOT / "configs" / "assets" / "tiny-bert"))
    with pytest.raises(UserError, match="model.distill needs candidate lists, but no training source has any"):
        dm.attach_lists()


def test_from_keeps_the_lists(log_build, tmp_path):
    out = tmp_path / "re"
    assert cli.main(["fret", "--from", str(log_build), "--select.negative=margin", "--output_dir", str(out)]) == 0
    assert (out / LIST_PASSAGES).read_bytes() == (log_build / LIST_PASSAGES).read_bytes()


def test_oracle_positives_relabel_from_qrels_by_hand(log_build, tmp_path):
    """scripts/oracle_positives.py against hand-written qrels: one record keeps its positive but loses its
    negative (relevant too), one moves to a relevant candidate, one takes a relevant passage from outside
    its list, and one without qrels is dropped."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("oracle_positives", ROOT / "scripts" / "oracle_positives.py")
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    records = [json.loads(line) for line in (log_build / "shard-00000.jsonl").read_text().splitlines()]
    corpus = {r["id"]: r for r in map(json.loads, (log_build / "stages" / "corpus.jsonl").read_text().splitlines())}
    keep, move, outside = records[:3]
    assert len(records) == 4  # the fourth has no qrels
    ranked = lambda r: [c["id"] for c in sorted(r["meta"]["candidates"], key=lambda c: c["retrieval_rank"])]  # noqa: E731
    moved_to = next(i for i in ranked(move) if i not in (move["meta"]["positive_id"], move["meta"]["negative_id"]))
    far = min(set(corpus) - set(ranked(outside)))
    qrels = {keep["meta"]["query_id"]: [keep["meta"]["positive_id"], keep["meta"]["negative_id"]],
             move["meta"]["query_id"]: [moved_to], outside["meta"]["query_id"]: [far]}
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, ds in qrels.items() for d in ds) + f"{records[3]['meta']['query_id']}\t{far}\t0\n")
    out = tmp_path / "oracle"
    oracle.main([str(log_build), str(beir), "train", str(out)])
    got = {r["meta"]["query_id"]: r for r in map(json.loads, (out / "shard-00000.jsonl").read_text().splitlines())}
    assert set(got) == set(qrels)  # a grade of 0 is no label: the fourth record is dropped
    text = lambda pid: {"text": corpus[pid]["text"], "title": corpus[pid].get("title") or None}  # noqa: E731
    kept = got[keep["meta"]["query_id"]]
    assert kept["positive"] == keep["positive"] and kept["meta"]["positive_id"] == keep["meta"]["positive_id"]
    lowest_other = [i for i in ranked(keep) if i not in qrels[keep["meta"]["query_id"]]][-1]
    assert kept["meta"]["negative_id"] == lowest_other != keep["meta"]["negative_id"]
    assert kept["negative"] == text(lowest_other)
    assert got[move["meta"]["query_id"]]["positive"] == text(moved_to) and got[move["meta"]["query_id"]]["meta"]["positive_id"] == moved_to
    assert got[move["meta"]["query_id"]]["negative"] == move["negative"]
    assert got[outside["meta"]["query_id"]]["meta"]["positive_id"] == far
    assert got[outside["meta"]["query_id"]]["positive"] == text(far)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest["oracle"][k] for k in ("kept", "list", "corpus", "dropped")} == {"kept": 1, "list": 1, "corpus": 1, "dropped": 1}
    assert manifest["records"] == 3


def test_positive_precision_by_hand(log_build, tmp_path, capsys):
    """scripts/positive_precision.py against hand-written qrels: one record's positive is relevant, one
    record's list holds a relevant passage that is not its positive, one holds none, one has no qrels."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("positive_precision", ROOT / "scripts" / "positive_precision.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    records = [json.loads(line) for line in (log_build / "shard-00000.jsonl").read_text().splitlines()]
    right, wrong, none, unlabelled = records
    other = next(c["id"] for c in wrong["meta"]["candidates"] if c["id"] != wrong["meta"]["positive_id"])
    listed = {c["id"] for r in records for c in r["meta"]["candidates"]}
    corpus = [json.loads(x)["id"] for x in (log_build / "stages" / "corpus.jsonl").read_text().splitlines()]
    outside = next(d for d in corpus if d not in listed)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{r['meta']['query_id']}\t{d}\t1\n" for r, d in
        ((right, right["meta"]["positive_id"]), (wrong, other), (none, outside))))

    def lead(r):  # the positive's QL less the best other candidate's, by hand
        ql = {c["id"]: c["ql"] for c in r["meta"]["candidates"]}
        return min(ql[r["meta"]["positive_id"]] - v for d, v in ql.items() if d != r["meta"]["positive_id"])

    cut = sorted(lead(r) for r in (right, wrong, none))[1]  # keeps two of the three labelled records
    assert script.main([str(log_build), str(beir), "train", "0", repr(cut)]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    kept = [r for r in (right, wrong, none) if lead(r) >= cut]
    want = [("0", 3, 1 / 3, 2 / 3),
            (f"{cut:g}", len(kept), sum(r is right for r in kept) / len(kept), sum(r is not none for r in kept) / len(kept))]
    for got, (m, n, prec, anyrel) in zip(rows, want, strict=True):
        assert [x.strip() for x in got] == [m, str(n), f"{100 * prec:.1f} %", f"{100 * anyrel:.1f} %"]
