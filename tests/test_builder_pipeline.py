"""The FRet pipeline end to end with the deterministic fake LLM: records, manifest, cache, re-selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_builders import cli
from data_builders.fret import context
from data_builders.fret import runner
from data_builders.config import load_config
from data_builders.fret.stages import choose, ql_lead
from gecko_lightning.data.schema import read_manifest, read_records

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"


def _build(out: Path, *extra: str) -> dict:
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(out), *extra]) == 0
    return read_manifest(out)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fret")
    _build(out)
    return out


def test_records_follow_the_schema_and_keep_every_candidate(built):
    records, stats = read_records(built)
    manifest = read_manifest(built)
    assert stats.records == manifest["records"] == manifest["counts"]["select"]["records"] > 0
    for r in records:
        assert r.source == "fret" and not r.symmetric and r.task and r.query
        cands = r.meta["candidates"]
        assert len(cands) == 8 and r.meta["seed_id"] in {c["id"] for c in cands}
        for c in cands:  # reciprocal-rank fusion, ranks from 1
            assert c["fused"] == pytest.approx(1 / c["r_ql"] + 1 / c["r_rc"])
        assert sorted(c["r_ql"] for c in cands) == list(range(1, 9))
        assert r.meta["positive_id"] == max(cands, key=lambda c: (c["fused"], -c["retrieval_rank"]))["id"]


def test_positive_and_negative_texts_match_the_chosen_ids(built):
    corpus = {json.loads(x)["id"]: json.loads(x) for x in (built / "stages" / "corpus.jsonl").read_text().splitlines()}
    for r in read_records(built)[0]:
        assert r.positive.text == corpus[r.meta["positive_id"]]["text"]
        assert r.negative.text == corpus[r.meta["negative_id"]]["text"]
        lowest = [c["id"] for c in r.meta["candidates"] if c["id"] not in (r.meta["positive_id"], r.meta["seed_id"])][-1]
        assert r.meta["negative_id"] == lowest


def test_manifest_reports_what_the_issue_asks_for(built):
    m = read_manifest(built)
    for key in ("counts", "task_distribution", "positive_ne_seed_rate", "parse_failure_rate", "models",
                "prompt_versions", "config", "wall_time_s", "llm_calls", "cache_hits", "truncated_passages"):
        assert key in m, key
    assert set(m["wall_time_s"]) == {"generate", "retrieve", "rerank", "select"}
    assert m["llm_calls"]["generate"] == 24 and m["llm_calls"]["rerank"] == 2 * 24 * 8  # QL + RC per pair
    assert sum(m["task_distribution"].values()) == m["records"]
    assert m["prompt_versions"]["generate"].startswith("generate-v1@")
    source = [json.loads(x) for x in (ROOT / "configs/assets/tiny_corpus/corpus.jsonl").read_text().splitlines()]
    assert m["truncated_passages"] == sum(len(r["text"].split()) > 96 for r in source) > 0  # fret_fake's budget


def test_forced_rerun_of_a_finished_build_makes_no_llm_calls(built, tmp_path):
    before = (built / "shard-00000.jsonl").read_text()
    first = read_manifest(built)
    again = _build(built, "--force")
    assert again["llm_calls"] == {"generate": 0, "rerank": 0}
    assert again["cache_hits"] == first["llm_calls"]
    assert (built / "shard-00000.jsonl").read_text() == before


def test_a_finished_build_of_the_same_config_is_reused_without_running_a_stage(built, monkeypatch, capsys):
    manifest_before = (built / "manifest.json").read_text()
    for stage in runner.STAGES[:-1]:
        monkeypatch.setattr(runner.stages, stage, lambda ctx, s=stage: pytest.fail(f"stage {s} ran"))
    monkeypatch.setattr(runner, "export", lambda ctx: pytest.fail("export ran"))
    _build(built)
    assert "already holds a finished build" in capsys.readouterr().err
    assert (built / "manifest.json").read_text() == manifest_before


@pytest.mark.parametrize("change", ["config", "corpus", "interrupted", "lost shard"])
def test_a_build_is_rerun_when_config_or_corpus_changed_or_it_never_finished(built, tmp_path, monkeypatch, change):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(built, out)
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(ROOT / "configs/assets/tiny_corpus/corpus.jsonl", corpus)
    cfg = load_config(FAKE, {"output_dir": str(out), "corpus.path": str(corpus)})
    runner.run(cfg, force=True)  # a finished build that knows this corpus file
    assert runner.finished_build(cfg) is not None
    if change == "config":
        cfg = load_config(FAKE, {"output_dir": str(out), "corpus.path": str(corpus), "select.negative": "none"})
    elif change == "corpus":
        corpus.write_text(corpus.read_text().replace("the", "a", 1))
    elif change == "interrupted":  # a stage started but export never wrote the manifest back
        monkeypatch.setattr(runner, "export", lambda ctx: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            runner.run(cfg, force=True)
        monkeypatch.undo()
    else:
        (out / "shard-00000.jsonl").unlink()
    assert runner.finished_build(cfg) is None
    stats = runner.run(cfg)
    assert not any(st.get("skipped") for st in stats.values())
    assert runner.finished_build(cfg) is not None


def test_reselect_uses_stored_scores_without_the_llm(built, monkeypatch):
    def no_llm(*a, **k):
        raise AssertionError("select/export must not build an LLM")

    monkeypatch.setattr(context, "build_llm", no_llm)
    _build(built, "--stage", "select,export", "--select.positive=seed", "--select.negative=none")
    records = read_records(built)[0]
    assert all(r.meta["positive_id"] == r.meta["seed_id"] and r.negative is None for r in records)
    assert read_manifest(built)["positive_ne_seed_rate"] == 0.0
    _build(built, "--stage", "select,export")  # back to the defaults for the other tests


def test_round_trip_filter_keeps_queries_whose_seed_ranks_in_top_k(built, tmp_path):
    ranks = [json.loads(x)["seed_retrieval_rank"] for x in (built / "stages" / "retrieve.jsonl").read_text().splitlines()]
    m = _build(tmp_path, "--filter.round_trip_top_k=3", f"--cache.path={built / 'llm_cache.sqlite'}")
    expected = sum(r is not None and r <= 3 for r in ranks)
    assert m["round_trip"] == {"top_k": 3, "kept": expected, "dropped": len(ranks) - expected}
    assert m["records"] == expected and m["llm_calls"]["generate"] == 0


def test_choose_never_uses_the_seed_as_a_negative():
    row = {"seed_id": "s", "candidates": [{"id": "a"}, {"id": "b"}, {"id": "s"}]}
    assert choose(row, "llm_top1", "lowest", 0) == ("a", "b")
    assert choose(row, "seed", "lowest", 0) == ("s", "b")
    assert choose(row, "llm_top1", "none", 0) == ("a", None)
    assert choose(row, "llm_top1", "random", 0) == ("a", "b")  # the only other candidate


def test_margin_negative_is_the_hardest_candidate_below_the_margin():
    # By hand: positive a scores 0.80, so with margin 0.95 a negative must score below 0.76. b (0.79) is
    # too close, a likely false negative; c (0.72) is the hardest that is far enough; d (0.50) is easier.
    cands = [{"id": i, "retrieval_score": v} for i, v in [("a", 0.80), ("b", 0.79), ("s", 0.75), ("c", 0.72), ("d", 0.50)]]
    row = {"seed_id": "s", "candidates": cands}
    assert choose(row, "llm_top1", "margin", 0, 0.95) == ("a", "c")  # the seed (0.75) is never the negative
    assert choose(row, "llm_top1", "margin", 0, 1.0) == ("a", "b")  # margin 1: the hardest other candidate
    assert choose(row, "llm_top1", "margin", 0, 0.6) == ("a", None)  # 0.48: no candidate that far below
    assert choose(row, "seed", "margin", 0, 0.95) == ("s", "d")  # held below the seed's 0.75: 0.7125, so not c
    unretrieved = {"seed_id": "s", "candidates": [{**c, "retrieval_score": None} if c["id"] == "s" else c for c in cands]}
    assert choose(unretrieved, "seed", "margin", 0, 0.95) == ("s", "d")  # no score to hold them below: lowest
    with pytest.raises(ValueError, match="needs the embedder's candidate scores"):
        choose({"seed_id": "s", "candidates": [{"id": "a"}, {"id": "s"}]}, "llm_top1", "margin", 0)


def test_teacher_margin_keeps_the_llms_near_positives_out_of_the_negatives():
    # By hand: positive a has QL -1.00; with a 0.25-nat margin a negative needs QL below -1.25. In fused
    # order the lowest, d (-1.10), is nearly as likely to the LLM as a: skipped for c (-1.60), the lowest left.
    cands = [{"id": i, "ql": q, "retrieval_score": r} for i, q, r in
             [("a", -1.00, 0.80), ("s", -1.40, 0.78), ("b", -2.00, 0.75), ("c", -1.60, 0.70), ("d", -1.10, 0.60)]]
    row = {"seed_id": "s", "candidates": cands}
    assert choose(row, "llm_top1", "lowest", 0) == ("a", "d")
    assert choose(row, "llm_top1", "lowest", 0, teacher_margin=0.25) == ("a", "c")
    assert choose(row, "llm_top1", "lowest", 0, teacher_margin=0.05) == ("a", "d")  # -1.10 < -1.05: far enough
    assert choose(row, "llm_top1", "margin", 0, 0.95, teacher_margin=0.7) == ("a", "b")  # only b is 0.7 nats below
    assert choose(row, "llm_top1", "lowest", 0, teacher_margin=1.5) == ("a", None)  # nothing that far below


def test_teacher_margin_is_counted_and_checked(built, tmp_path, capsys):
    out = tmp_path / "teacher"
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(out), "--select.teacher_margin=0.05"]) == 0
    records = read_records(out)[0]
    changed = 0
    for r in records:  # a naive re-implementation: the lowest in fused order whose QL is 0.05 below the positive's
        ql = {c["id"]: c["ql"] for c in r.meta["candidates"]}
        pos = r.meta["positive_id"]
        others = [c for c in ql if c not in (pos, r.meta["seed_id"])]
        far = [c for c in others if ql[c] < ql[pos] - 0.05]
        assert r.meta["negative_id"] == (far[-1] if far else None)
        changed += (others[-1] if others else None) != r.meta["negative_id"]
    assert read_manifest(out)["stages"]["select"]["teacher_margin_changed_negative"] == changed  # fraction 0: all rows train
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(tmp_path / "bad"), "--select.teacher_margin=-1"]) == 2
    assert "select.teacher_margin=-1.0 must be >= 0 nats" in capsys.readouterr().err


def test_ql_lead_by_hand():
    row = {"candidates": [{"id": "a", "ql": -1.00}, {"id": "b", "ql": -1.30}, {"id": "c", "ql": -1.10}]}
    assert ql_lead(row, "a") == pytest.approx(0.10)  # -1.00 against the best other, c's -1.10
    assert ql_lead(row, "b") == pytest.approx(-0.30)  # another candidate leads it
    assert ql_lead({"candidates": [{"id": "a", "ql": -1.0}]}, "a") == float("inf")  # nothing to lead


def test_positive_margin_keeps_the_records_the_teacher_is_sure_of(built, tmp_path, capsys):
    everything, sure = tmp_path / "all", tmp_path / "sure"
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(everything)]) == 0
    records = read_records(everything)[0]

    def lead(r):  # a naive re-implementation: the positive's QL less the best other candidate's
        ql = {c["id"]: c["ql"] for c in r.meta["candidates"]}
        return min(ql[r.meta["positive_id"]] - v for c, v in ql.items() if c != r.meta["positive_id"])

    cut = sorted(lead(r) for r in records)[len(records) // 2]  # the median: some records on each side
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(sure), f"--select.positive_margin={cut!r}"]) == 0
    want = [r.to_dict() for r in records if lead(r) >= cut]
    got = [r.to_dict() for r in read_records(sure)[0]]
    assert got == want and 0 < len(got) < len(records)
    assert read_manifest(sure)["stages"]["select"]["positive_margin_dropped"] == len(records) - len(got)
    # the held-out queries are chosen before the filter: the test split is the unfiltered build's
    split_all, split_sure = tmp_path / "split-all", tmp_path / "split-sure"
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(split_all), "--test_split.fraction=0.3"]) == 0
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(split_sure), "--test_split.fraction=0.3",
                     f"--select.positive_margin={cut!r}"]) == 0
    held = (split_all / "stages" / "test.jsonl").read_text()
    assert held and held == (split_sure / "stages" / "test.jsonl").read_text()
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(tmp_path / "bad"), "--select.positive_margin=-0.1"]) == 2
    assert "select.positive_margin=-0.1 must be >= 0 nats" in capsys.readouterr().err


def test_retrieve_keeps_the_embedders_score_of_each_candidate(built):
    """The scores stored beside the candidates equal the embedder's own cosine, computed here afresh."""
    from data_builders.index import doc_texts, embed, load_embedder

    cfg = load_config(FAKE, {})
    corpus = {json.loads(x)["id"]: json.loads(x) for x in (built / "stages" / "corpus.jsonl").read_text().splitlines()}
    rows = [json.loads(x) for x in (built / "stages" / "retrieve.jsonl").read_text().splitlines()][:5]
    encoder = load_embedder(cfg.retrieve, seed=cfg.corpus.seed)
    rc = cfg.retrieve
    for row in rows:
        q = embed(encoder, [rc.query_format.format(task=row["task"], query=row["query"])], rc, show_progress=False)
        docs = embed(encoder, doc_texts([corpus[c] for c in row["candidates"]], rc), rc, show_progress=False)
        expected = (docs @ q[0]).tolist()
        got = row["scores"]
        assert len(got) == len(row["candidates"])
        for g, e in zip(got, expected):
            assert g is None or g == pytest.approx(e, abs=1e-5)
        known = [g for g in got if g is not None]
        assert known == sorted(known, reverse=True)  # retrieval order
    reranked = [json.loads(x) for x in (built / "stages" / "rerank.jsonl").read_text().splitlines()]
    assert all("scores" not in r and all("retrieval_score" in c for c in r["candidates"]) for r in reranked)


def test_margin_reselection_and_a_bad_margin(built, tmp_path, capsys):
    out = tmp_path / "margin"
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(out), "--select.negative=margin"]) == 0
    for r in read_records(out)[0]:
        score = {c["id"]: c["retrieval_score"] for c in r.meta["candidates"]}
        pos, neg = r.meta["positive_id"], r.meta["negative_id"]
        others = [c for c in score if c not in (pos, r.meta["seed_id"])]  # fused order, best first
        if score[pos] is None:  # a seed retrieval missed (this build has no round trip): the lowest
            assert neg == others[-1]
            continue
        below = [c for c in others if score[c] is not None and score[c] < 0.95 * score[pos]]
        assert neg == (max(below, key=score.get) if below else None)
    bad = tmp_path / "bad"
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(bad), "--select.negative=margin",
                     "--select.negative_margin=1.5"]) == 2
    assert "select.negative_margin=1.5 must be in (0, 1]" in capsys.readouterr().err


def test_ql_top1_takes_the_best_query_likelihood_not_the_fused_top():
    from data_builders.fret.rerank import _fuse

    # By hand: QL ranks b=1 c=2 a=3, RC ranks a=1 c=2 b=3; fused a = b = 4/3 > c = 1, and the tie keeps
    # retrieval order, so the fused top 1 is a while QL alone prefers b.
    row = {"seed_id": "c", "candidates": _fuse(["a", "b", "c"], [-3.0, -1.0, -2.0], [-0.5, -2.0, -1.0])}
    assert choose(row, "llm_top1", "none", 0) == ("a", None)
    assert choose(row, "ql_top1", "lowest", 0) == ("b", "a")  # the seed c is never the negative
    assert choose(row, "seed", "lowest", 0) == ("c", "b")


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"unknown key or argument 'select.postive'; did you mean 'select.positive'\?"):
        load_config(FAKE, {"select.postive": "seed"})
    with pytest.raises(ValueError, match=r"select.negative='hardest' is not valid: expected one of 'lowest', 'random', 'margin', 'none'"):
        load_config(FAKE, {"select.negative": "hardest"})


def test_cli_rejects_bad_flags_and_stages(capsys, tmp_path):
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(tmp_path), "--stage", "rank"]) == 2
    assert "unknown stage(s) ['rank']" in capsys.readouterr().err
    assert cli.main(["fret", "--config", str(FAKE), "positive=seed"]) == 2
    assert "unknown key or argument 'positive'; did you mean 'select.positive'?" in capsys.readouterr().err


def test_a_stage_without_its_input_says_which_stage_to_run(tmp_path, capsys):
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(tmp_path), "--stage", "select"]) == 2
    assert "rerank.jsonl does not exist: run the stage that writes it first" in capsys.readouterr().err
