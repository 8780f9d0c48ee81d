"""The label-free test split of a FRet build (data_builders/fret/split.py): its size, the three
no-leakage rules checked on the written files alone, `--from` keeping it, fraction 0 changing no
record, and `gecko eval` reading the folder. Sharded builds holding out the same seeds:
tests/test_builder_shards.py (its cases hold out half the seeds)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from data_builders.config import SplitConfig, load_config
from data_builders.fret import split
from data_builders.fret.reselect import reselect
from data_builders.fret.runner import run
from gecko_lightning.data.schema import read_manifest, read_records
from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.errors import UserError
from gecko_lightning.evaluation.cli import main as eval_main
from gecko_lightning.evaluation.loaders import load_beir

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"
HALF = {"test_split.fraction": 0.5}


def _build(out: Path, **over) -> Path:
    run(load_config(FAKE, {"output_dir": str(out), **over}))
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """The same fake build twice, sharing one LLM cache: half the seeds held out, and none."""
    root = tmp_path_factory.mktemp("split")
    cache = {"cache.path": str(root / "llm_cache.sqlite")}
    return {"half": _build(root / "half", **HALF, **cache), "none": _build(root / "none", **cache)}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _qrels(folder: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, pid, grade = line.split("\t")
        assert int(grade) > 0
        out.setdefault(qid, set()).add(pid)
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_the_share_held_out_matches_the_fraction():
    ids = [f"doc-{i}" for i in range(20_000)]
    for fraction in (0.1, 0.2, 0.5):
        share = sum(split.is_test_seed(i, fraction) for i in ids) / len(ids)
        assert abs(share - fraction) < 0.015, (fraction, share)  # binomial std at n=20k: < 0.004
    assert not any(split.is_test_seed(i, 0) for i in ids)
    # Nested: a seed held out at 0.2 is held out at 0.5 too (the hash is compared with the fraction).
    assert all(split.is_test_seed(i, 0.5) for i in ids if split.is_test_seed(i, 0.2))


def test_no_test_query_leaks_into_training_read_from_the_written_files(builds):
    out = builds["half"]
    queries = _jsonl(out / "test" / "queries.jsonl")
    qrels = _qrels(out / "test")
    records = read_records(out)[0]
    assert len(queries) > 3 and len(records) > 3
    assert set(qrels) == {q["_id"] for q in queries}  # every test query has a relevant passage
    relevant = {pid for pids in qrels.values() for pid in pids}
    test_seeds = {q["metadata"]["seed_id"] for q in queries}
    assert not {_norm(r.query) for r in records} & {_norm(q["text"]) for q in queries}, "a test query is a training query"
    assert not {r.meta["positive_id"] for r in records} & relevant, "a training positive is relevant to a test query"
    assert not {r.meta["seed_id"] for r in records} & test_seeds, "a test seed is the seed of a training record"
    # Every re-ranked query is accounted for: a record, a test query, or a counted drop.
    reranked = _jsonl(out / "stages" / "rerank.jsonl")
    dropped = read_manifest(out)["test_split"]["training_records_dropped"]
    assert len(records) + len(queries) + sum(dropped.values()) == len(reranked)


def test_the_test_seeds_are_the_hashed_ones_and_the_manifest_says_so(builds):
    out = builds["half"]
    reranked = [r["seed_id"] for r in _jsonl(out / "stages" / "rerank.jsonl")]
    held = [q["metadata"]["seed_id"] for q in _jsonl(out / "test" / "queries.jsonl")]
    # An independent reading of the rule: sha256 of "test_split:" + id, first 8 bytes, below the fraction.
    want = [s for s in reranked if int(hashlib.sha256(f"test_split:{s}".encode()).hexdigest()[:16], 16) < 2**63]
    assert held == want
    manifest = read_manifest(out)["test_split"]
    assert manifest["queries"] == len(held) and manifest["fraction"] == 0.5 and manifest["folder"] == "test"
    assert manifest["relevance"] == "graded" and "seed passage" in manifest["rule"]
    assert manifest["qrels"] == sum(len(p) for p in _qrels(out / "test").values())


def test_fraction_zero_only_adds_back_the_held_out_records_and_asks_the_same_llm_calls(builds):
    """The split removes training records and changes none; without it there is no test folder.
    (Byte-identity with the build before the split existed was checked by hand: docs/fret.md.)"""
    half, none = builds["half"], builds["none"]
    assert not (none / "test").exists() and read_manifest(none)["test_split"]["queries"] == 0
    lines_none = (none / "shard-00000.jsonl").read_text().splitlines()
    lines_half = (half / "shard-00000.jsonl").read_text().splitlines()
    kept = {json.loads(line)["id"] for line in lines_half}
    assert lines_half == [line for line in lines_none if json.loads(line)["id"] in kept]
    assert len(lines_none) == len(_jsonl(none / "stages" / "rerank.jsonl"))
    # Built second on the first's cache: every call it asked had the key the split build stored.
    assert read_manifest(none)["llm_calls"] == {"generate": 0, "rerank": 0}
    assert read_manifest(none)["cache_hits"] == read_manifest(half)["llm_calls"]


def test_reselection_keeps_the_split(builds, tmp_path):
    src = builds["half"]
    cfg = load_config(FAKE, {"output_dir": str(tmp_path / "again"), "select.positive": "seed", **HALF,
                             "cache.path": read_manifest(src)["config"]["cache"]["path"]})
    reselect(src, cfg)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert (tmp_path / "again" / "test" / name).read_bytes() == (src / "test" / name).read_bytes(), name
    assert read_manifest(tmp_path / "again")["test_split"] == read_manifest(src)["test_split"]


def test_split_drops_both_kinds_of_leak_and_grades_what_both_judges_prefer():
    def cand(pid, r_ql, r_rc):
        return {"id": pid, "r_ql": r_ql, "r_rc": r_rc}

    test_id = next(f"s{i}" for i in range(100) if split.is_test_seed(f"s{i}", 0.5))
    train = [f"s{i}" for i in range(100) if not split.is_test_seed(f"s{i}", 0.5)][:3]
    rows = [{"seed_id": test_id, "query": "Who wrote it?", "candidates": [cand(test_id, 2, 2), cand("better", 1, 1),
                                                                          cand("mixed", 1, 3), cand("worse", 3, 4)]},
            {"seed_id": train[0], "query": "who  WROTE it?", "candidates": []},  # the test query again
            {"seed_id": train[1], "query": "other", "candidates": []},  # its positive is relevant to the test query
            {"seed_id": train[2], "query": "fine", "candidates": []}]
    chosen = [{"seed_id": r["seed_id"], "positive_id": p, "negative_id": None}
              for r, p in zip(rows, [test_id, train[0], "better", train[2]])]
    kept, test, stats = split.split(rows, chosen, SplitConfig(fraction=0.5))
    assert [k["seed_id"] for k in kept] == [train[2]]
    assert test[0]["qrels"] == {test_id: 2, "better": 1}  # "mixed" wins on QL only
    assert stats["training_records_dropped"] == {"query_in_test": 1, "positive_relevant_to_test": 1}
    kept, test, _ = split.split(rows, chosen, SplitConfig(fraction=0.5, relevance="seed"))
    assert test[0]["qrels"] == {test_id: 1} and len(kept) == 2
    assert split.split(rows, chosen, SplitConfig(fraction=0.0))[0] == chosen


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_a_bad_fraction_is_a_one_line_error(fraction):
    with pytest.raises(UserError, match=r"test_split.fraction=.* must be in \[0, 1\)"):
        split.split([], [], SplitConfig(fraction=fraction))


def test_gecko_eval_reads_the_test_folder(builds, tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "model"
    GeckoEncoder.from_pretrained(ROOT / "configs/assets/tiny-bert", random_init=True, max_length=64).save_pretrained(model)
    beir = builds["half"] / "test"
    out = tmp_path / "eval.json"
    assert eval_main(["--model", str(model), "--beir", str(beir), "--label", "variant=base", "--label", "qrels=llm",
                      "--output", str(out)]) == 0
    scores = json.loads(out.read_text())["test"]
    assert 0 <= scores["ndcg_at_10"] <= 100 and 0 <= scores["recall_at_100"] <= 100
    data = load_beir(beir)
    assert len(data.queries) == read_manifest(builds["half"])["test_split"]["queries"]
    assert len(data.corpus) == len(_jsonl(builds["half"] / "stages" / "corpus.jsonl"))


def test_a_build_from_before_the_split_is_not_taken_for_one_with_it(builds, tmp_path):
    """A manifest written before `test_split` existed describes a build that held no seed out: it is a
    finished build for fraction 0, and must be rebuilt (from the cache) for the default fraction."""
    from data_builders.fret.runner import finished_build

    out = tmp_path / "old"
    out.mkdir()
    for f in builds["none"].iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    manifest = read_manifest(builds["none"])
    old = {**manifest, "config": {k: v for k, v in manifest["config"].items() if k != "test_split"}}
    (out / "manifest.json").write_text(json.dumps(old))
    cache = {"output_dir": str(out), "cache.path": str(builds["none"].parent / "llm_cache.sqlite")}
    assert finished_build(load_config(FAKE, cache)) is not None  # fret_fake.yaml sets fraction 0
    assert finished_build(load_config(FAKE, {**cache, "test_split.fraction": 0.2})) is None
