"""Sharded FRet builds: the seed split, shard numbering from a Slurm array, the shared corpus index, the
merge, per-shard resume and the Slurm launcher. The invariant: the merged shards of a build equal the
unsharded build of the same config, record for record and byte for byte in every stage file."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_builder_resume import kill_midway

from data_builders import cli
from data_builders.config import ShardConfig, load_config
from data_builders.fret.runner import finished_build, run
from data_builders.corpus import block_range
from data_builders.fret.merge import merge_builds
from data_builders.fret.sharding import resolve_shard
from gecko_lightning.data.schema import read_manifest, read_records, write_manifest
from gecko_lightning.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"
TINY = ROOT / "configs" / "data" / "fret_tiny.yaml"
STAGE_FILES = ("corpus", "generate", "retrieve", "rerank", "select", "test")
TEST_SPLIT = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")  # the held-out BEIR folder, test/
# retrieve.batch_size=2: the 64-passage corpus is embedded in two blocks of 16 batches, so an index of
# 2 slices has two non-empty ones. tiny: gen_batch_size=2 makes 6 generate batches of its 12 seeds, so
# every one of 4 shards gets some, and temperature > 0 samples, which transformers seeds per batch.
# fake keeps 3 batches of 8 of its 24 seeds: with 4 shards one is empty, which must merge too.
# Half the seeds are held out as the test split (test_split.fraction): shards must hold out the same ones.
CASES = {"fake": (FAKE, {"retrieve.batch_size": 2, "test_split.fraction": 0.5}),
         "tiny": (TINY, {"retrieve.batch_size": 2, "llm.gen_batch_size": 2, "llm.temperature": 0.7, "test_split.fraction": 0.5})}


@pytest.fixture(scope="module", autouse=True)
def quiet_machine():
    """No Slurm array around (a CI runner may sit in one; only what a test sets may count) and one
    torch thread (tiny models on shared cores run many times slower with more), for module fixtures too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("SLURM_")]:
            mp.delenv(key)
        yield
    torch.set_num_threads(threads)


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}, "OMP_NUM_THREADS": "1"}


def _cfg(config: Path, out: Path, **over):
    return load_config(config, {"output_dir": str(out), **over})


def _shard(i: int, n: int) -> dict:
    return {"shard.index": i, "shard.count": n}


def _embed(config: Path, root: Path, slices: int, **over) -> None:
    """The index step as a cluster runs it: each corpus slice, then the merge of the slices."""
    for i in range(slices):
        run(_cfg(config, root, **over, **_shard(i, slices)), ["embed"])
    if slices > 1:
        run(_cfg(config, root, **over), ["index"])


def _build_shards(config: Path, root: Path, count: int, **over) -> list[Path]:
    _embed(config, root, 2, **over)
    for i in range(count):
        run(_cfg(config, root, **over, **_shard(i, count)))
    return sorted(root.glob(f"shard-*-of-{count}"))


# ---- which seeds a shard builds


@pytest.mark.parametrize("total, unit, count", [(24, 8, 4), (12, 2, 3), (13, 4, 3), (5, 8, 2), (0, 8, 3), (100, 7, 6)])
def test_shards_are_runs_of_whole_batches_that_cover_every_seed_once(total, unit, count):
    parts = [block_range(total, unit, i, count) for i in range(count)]
    seeds = list(range(total))
    assert [s for lo, hi in parts for s in seeds[lo:hi]] == seeds  # in order, disjoint, all of them
    assert all(lo % unit == 0 for lo, hi in parts if lo < hi)  # no generate batch is cut in two
    batches = [len(range(lo, hi, unit)) for lo, hi in parts]
    assert max(batches) - min(batches) <= 1


def test_the_shard_comes_from_the_slurm_array_when_not_given():
    cfg = _cfg(FAKE, Path("out"))
    array = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "8"}
    assert resolve_shard(cfg, array).shard == ShardConfig(index=2, count=4)  # --array=5-8: ids need not start at 0
    stepped = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
               "SLURM_ARRAY_TASK_MAX": "6", "SLURM_ARRAY_TASK_STEP": "2"}
    assert resolve_shard(cfg, stepped).shard == ShardConfig(index=2, count=4)  # --array=0-6:2
    assert resolve_shard(_cfg(FAKE, Path("out"), **_shard(1, 3)), array).shard == ShardConfig(index=1, count=3)
    assert resolve_shard(cfg, {}).shard == ShardConfig()  # no array, no flags: unsharded


@pytest.mark.parametrize("env, flags, message", [
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "8"},
     {}, r"SLURM_ARRAY_TASK_ID=9 is not one of the array's 4 ids 5..8"),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9"},
     {}, r"not a range.*--array=1,4,9"),
    ({"SLURM_ARRAY_TASK_ID": "0"}, {}, r"SLURM_ARRAY_TASK_COUNT is unset.*--shard.index and --shard.count"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, {"shard.count": 8}, r"shard.count=8 but this Slurm array has 4 tasks"),
    ({}, {"shard.index": 1}, r"shard.count=None: a sharded build needs both"),
    ({}, {"shard.index": 3, "shard.count": 3}, r"shard.index=3, shard.count=3: the index must be in 0..count-1"),
])
def test_bad_shard_numbers_are_one_line_errors(env, flags, message):
    with pytest.raises(UserError, match=message):
        resolve_shard(_cfg(FAKE, Path("out"), **flags), env)


# ---- the invariant


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory) -> dict[str, Path]:
    """The reference builds, one per config, in one process each (no shard anywhere)."""
    out = {}
    for name, (config, over) in CASES.items():
        out[name] = tmp_path_factory.mktemp(f"unsharded-{name}")
        run(_cfg(config, out[name], **over))
    return out


def _records(folder: Path) -> dict[str, dict]:
    return {r.id: r.to_dict() for r in read_records(folder)[0]}


def _counts(manifest: dict) -> dict:
    """Per-stage counts, with LLM calls and cache hits as their sum: a call two shards both needed is
    made once per shard but answered once from the cache in one process."""
    out = {}
    for stage, counts in manifest["counts"].items():
        rest = {k: v for k, v in counts.items() if k not in ("llm_calls", "cache_hits")}
        out[stage] = {**rest, "asked": counts.get("llm_calls", 0) + counts.get("cache_hits", 0)}
    return out


@pytest.mark.parametrize("count", [1, 3, 4])
@pytest.mark.parametrize("name", list(CASES))
def test_merged_shards_equal_the_unsharded_build(unsharded, tmp_path, name, count):
    config, over = CASES[name]
    root = tmp_path / "sharded"
    manifest = merge_builds(_build_shards(config, root, count, **over), root)
    reference = unsharded[name]

    assert _records(root) == _records(reference) and len(_records(root)) > 0
    for stage in STAGE_FILES:  # same passages, generations (sampled), neighbours, scores and choices
        assert (root / "stages" / f"{stage}.jsonl").read_bytes() == (reference / "stages" / f"{stage}.jsonl").read_bytes(), stage
    for name in TEST_SPLIT:  # the same held-out seeds, queries and LLM labels
        assert (root / "test" / name).read_bytes() == (reference / "test" / name).read_bytes(), name
    want = read_manifest(reference)
    assert _counts(manifest) == _counts(want)
    for key in ("records", "task_distribution", "positive_ne_seed_rate", "llm_top1_ne_seed_rate", "parse_failure_rate",
                "parse_failures", "truncated_passages", "round_trip", "test_split"):
        assert manifest[key] == want[key], key
    assert [m["index"] for m in manifest["merged_from"]] == list(range(count))
    assert len(manifest["shards_wall_time_s"]) == count and manifest["config"]["shard"] == {"index": None, "count": None}
    # The merged folder is the unsharded build: the same command there finds it finished.
    assert finished_build(_cfg(config, root, **over)) is not None


def test_a_forced_rebuild_of_a_merged_build_makes_no_llm_calls(tmp_path):
    root = tmp_path / "sharded"
    merge_builds(_build_shards(FAKE, root, 3), root)
    before = (root / "shard-00000.jsonl").read_bytes()
    run(_cfg(FAKE, root), force=True)  # unsharded, in the merged folder: every call is in the merged cache
    assert read_manifest(root)["llm_calls"] == {"generate": 0, "rerank": 0}
    assert (root / "shard-00000.jsonl").read_bytes() == before


def test_sampled_generation_depends_on_its_batch_so_shards_keep_batches_whole():
    """Why a shard holds whole generate batches: transformers seeds sampling once per batch, so a prompt
    drawn in another batch gets other tokens. Greedy outputs and QL/RC scores of the tiny models were
    bit-identical across batch compositions on CPU here, but an embedding of one text alone differed
    from the same text in a padded batch by 6e-8, and padded kernels promise nothing in general."""
    from data_builders.llm.hf import TransformersLLM
    from data_builders.llm import GenRequest

    cfg = _cfg(TINY, Path("out"), **{"llm.temperature": 0.7})
    llm = TransformersLLM(cfg.llm, seed=0)
    requests = [GenRequest(f"Passage: {text}\nWrite a query.", "task:") for text in ("a cat", "the moon", "old bridges")]
    whole = llm.generate(requests)
    assert llm.generate(requests) == whole  # the same batch repeats exactly
    assert llm.generate(requests[:1]) + llm.generate(requests[1:]) != whole


# ---- the shared corpus index


def test_a_shard_refuses_a_missing_or_mismatching_index(tmp_path):
    root = tmp_path / "sharded"
    with pytest.raises(UserError, match=r"holds no finished corpus index.*--stage embed"):
        run(_cfg(FAKE, root, **_shard(0, 2)))
    assert not (root / "shard-0-of-2").exists()  # refused before any LLM call
    run(_cfg(FAKE, root, **_shard(0, 2)), ["embed"])
    with pytest.raises(UserError, match=r"slice\(s\) \[1\] of 2 are not embedded yet"):
        run(_cfg(FAKE, root), ["index"])
    run(_cfg(FAKE, root, **_shard(1, 2)), ["embed"])
    run(_cfg(FAKE, root), ["index"])
    with pytest.raises(UserError, match=r"other retrieve settings.*'max_length': \(128, 64\)"):
        run(_cfg(FAKE, root, **_shard(0, 2), **{"retrieve.max_length": 64}))
    with pytest.raises(UserError, match=r"differ from those embedded.*max_passage_tokens"):
        run(_cfg(FAKE, root, **_shard(0, 2), **{"corpus.max_passage_tokens": 50}))
    # An unsharded build never rewrites an index named by retrieve.index_dir: it is someone else's too.
    with pytest.raises(UserError, match=r"differ from those embedded"):
        run(_cfg(FAKE, tmp_path / "other", **{"corpus.max_passage_tokens": 50, "retrieve.index_dir": str(root / "index")}))
    with pytest.raises(UserError, match=r"embed and index .* run them on their own"):
        run(_cfg(FAKE, root), ["embed", "generate"])


# ---- merge errors


@pytest.fixture(scope="module")
def three_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("three")
    _build_shards(FAKE, root, 3)
    return root


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = read_manifest(folder)
    manifest.pop("schema_version")
    write_manifest(folder, **{**manifest, **changes})


@pytest.mark.parametrize("case, message", [
    ("missing", r"shard\(s\) \[2\] of 3 are missing \(e.g. shard-2-of-3\)"),
    ("twice", r"shard 1 of 3 given twice"),
    ("unfinished", r"shard-1-of-3: no manifest.json, so this shard has not finished"),
    ("failures", r"shard-1-of-3: LLM calls failed in this shard \{'rerank': 2\}"),
    ("lost records", r"shard-2-of-3: record file shard-00000.jsonl is missing or changed"),
    ("other config", r"shard-1-of-3 was built with another config than .*shard-0-of-3: select.negative: 'lowest' vs 'none'"),
    ("not a shard", r"not a shard \(its manifest has no shard section\)"),
    ("into a build", r"holds a build that is not a merge"),
    ("over records", r"holds a build that is not a merge"),
])
def test_merge_refuses_anything_but_all_shards_of_one_finished_build(three_shards, unsharded, tmp_path, case, message):
    root = tmp_path / "copy"
    shutil.copytree(three_shards, root)
    dirs, out = sorted(root.glob("shard-*-of-3")), tmp_path / "merged"
    if case == "missing":
        dirs = dirs[:2]
    elif case == "twice":
        dirs = [*dirs, dirs[1]]
    elif case == "unfinished":
        (dirs[1] / "manifest.json").unlink()
    elif case == "failures":
        _edit_manifest(dirs[1], llm_failures={"generate": 0, "rerank": 2})
    elif case == "lost records":
        (dirs[2] / "shard-00000.jsonl").unlink()
    elif case == "other config":
        config = read_manifest(dirs[1])["config"]
        _edit_manifest(dirs[1], config={**config, "select": {**config["select"], "negative": "none"}})
    elif case == "not a shard":
        dirs = [*dirs, unsharded["fake"]]
    else:  # a finished build, or only its records: export would replace them
        out = tmp_path / "build"
        shutil.copytree(unsharded["fake"], out)
        if case == "over records":
            for path in [out / "manifest.json", *out.glob("stages/*")]:
                path.unlink()
    with pytest.raises(UserError, match=message):
        merge_builds(dirs, out)
    if case in ("into a build", "over records"):
        assert _records(out) == _records(unsharded["fake"])  # nothing of it was touched


# ---- resume


@pytest.mark.slow
def test_a_killed_shard_resumes_from_its_own_cache_without_repeating_a_call(tmp_path):
    index = tmp_path / "index"
    run(_cfg(FAKE, tmp_path / "unused", **{"retrieve.index_dir": str(index)}), ["embed"])
    flags = ["--shard.index=1", "--shard.count=2", "--llm.gen_batch_size=4", f"--retrieve.index_dir={index}"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(reference), *flags]) == 0
    total = sum(read_manifest(reference / "shard-1-of-2")["llm_calls"].values())

    # 0.2 s per fake batch: 3 generate batches, then one QL and one RC call per query, 12 queries.
    cmd = [sys.executable, "-m", "gecko_lightning", "build", "fret", "--config", str(FAKE), "--output_dir", str(resumed),
           *flags, "--llm.fake_delay_s=0.2"]
    done = kill_midway(cmd, resumed / "shard-1-of-2" / "llm_cache.sqlite", env=_env())
    assert 0 < done < total

    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(resumed), *flags]) == 0
    manifest = read_manifest(resumed / "shard-1-of-2")
    assert sum(manifest["llm_calls"].values()) == total - done  # finished calls were not asked again
    assert manifest["shard"]["seed_range"] == [12, 24]
    assert (resumed / "shard-1-of-2" / "shard-00000.jsonl").read_bytes() == (reference / "shard-1-of-2" / "shard-00000.jsonl").read_bytes()
    assert not (resumed / "shard-0-of-2").exists()


# ---- the Slurm launcher


LAUNCHER = ROOT / "scripts" / "slurm_build.sh"


def test_the_launcher_dry_run_chains_embed_index_shards_and_merge():
    out = subprocess.run(["bash", str(LAUNCHER), "--shards", "4", "--slices", "2", "--output_dir", "outputs/x", "--dry-run",
                          "--", "--config", "configs/data/fret_wiki.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    jobs = [shlex.split(line) for line in out.stderr.splitlines() if line.startswith("sbatch")]  # %q-quoted
    assert [j[1] for j in jobs] == ["--job-name=fret-embed", "--job-name=fret-index", "--job-name=fret-shard", "--job-name=fret-merge"]
    assert "--array=0-1" in jobs[0] and "--array=0-3" in jobs[2]
    assert [next(a for a in j if a.startswith("--dependency")) for j in jobs[1:]] == [
        "--dependency=afterok:fret-embed.jobid", "--dependency=afterok:fret-index.jobid", "--dependency=afterok:fret-shard.jobid"]
    build = "--wrap=gecko build fret --config configs/data/fret_wiki.yaml --output_dir=outputs/x"
    assert [j[-1] for j in jobs] == [f"{build} --stage embed", f"{build} --stage index", build,
                                     "--wrap=gecko build fret --merge outputs/x/shard-*-of-4 --output_dir=outputs/x"]
    bad = subprocess.run(["bash", str(LAUNCHER), "--shards", "0", "--output_dir", "x", "--", "--config", "c"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--shards must be a positive integer, got '0'" in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "gecko").exists(), reason="needs the gecko command in the venv")
def test_the_launcher_under_a_fake_sbatch_builds_what_one_process_builds(unsharded, tmp_path):
    """tests/fixtures/slurm/sbatch runs each job at once, array tasks in turn, with Slurm's variables."""
    env = _env()
    env.update(PATH=f"{ROOT / 'tests/fixtures/slurm'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               SBATCH_LOG=str(tmp_path / "sbatch.log"))
    out = tmp_path / "out"
    # One embed job (its array branch is the dry run's), then an array of 2 shards and the merge.
    run_ = subprocess.run(["bash", str(LAUNCHER), "--shards", "2", "--output_dir", str(out), "--",
                           "--config", str(FAKE), "--retrieve.batch_size=2", "--test_split.fraction=0.5"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run_.returncode == 0, run_.stderr[-3000:]
    assert len((tmp_path / "sbatch.log").read_text().splitlines()) == 3
    assert _records(out) == _records(unsharded["fake"])
    assert [m["index"] for m in read_manifest(out)["merged_from"]] == [0, 1]
