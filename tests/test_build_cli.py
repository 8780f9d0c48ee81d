"""`gecko build fret` as a typed CLI: help from the docstrings, config round trip, one-line errors,
`--from` re-selection with 0 LLM calls, `--merge` wiring and `--push-to-hub` with a dataset card."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data_builders import cli, config
from data_builders.fret import context
from data_builders.fret import runner
from data_builders.config import BuildConfig, load_config
from gecko_lightning.data.schema import read_manifest, read_records

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"
DATA_CONFIGS = sorted((ROOT / "configs" / "data").glob("*.yaml"))


def _attribute_docstrings() -> dict[str, str]:
    """{"section.key": docstring} read from config.py's source with `ast`, not through jsonargparse."""
    tree = ast.parse(Path(config.__file__).read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    sections = {f.name: f.type for f in dataclasses.fields(BuildConfig) if f.type in classes}
    docs = {}
    for prefix, cls in [("", "BuildConfig")] + [(f"{n}.", t) for n, t in sections.items()]:
        body = classes[cls].body
        for field, doc in zip(body, body[1:] + [None]):
            if isinstance(field, ast.AnnAssign) and (prefix or field.target.id not in sections):
                text = doc.value.value if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) else ""
                docs[prefix + field.target.id] = text
    return docs


def _reference(path: Path, **dotted) -> BuildConfig:
    """Defaults, then the YAML file, then dotted overrides, set by hand on the dataclasses."""
    cfg = BuildConfig()
    for section, values in (yaml.safe_load(path.read_text()) or {}).items():
        for key, value in values.items() if isinstance(values, dict) else [(None, values)]:
            setattr(getattr(cfg, section), key, value) if key else setattr(cfg, section, value)
    for key, value in dotted.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def _err_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO")]
    assert len(err) == 1, err
    return err[0]


def test_help_lists_every_key_with_its_docstring(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["fret", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    docs = _attribute_docstrings()
    assert len(docs) > 60 and "select.positive" in docs and "output_dir" in docs
    undocumented = [k for k, d in docs.items() if not d.strip()]
    assert not undocumented, f"give these keys a docstring: {undocumented}"
    for key, doc in docs.items():
        assert f"--{key} " in text, key
        assert " ".join(doc.split())[:50] in text, key
    for flag in ("--config", "--print_config", "--stage", "--force", "--from", "--merge", "--push-to-hub", "--private"):
        assert flag in text


def test_print_config_round_trips_through_config(tmp_path, capsys):
    flags = ["--config", str(FAKE), "--select.positive=seed", "--filter.round_trip_top_k=3", "--corpus.columns={id: doc}"]
    with pytest.raises(SystemExit):
        cli.parse([*flags, "--print_config"])
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    expected = _reference(FAKE, select__positive="seed", filter__round_trip_top_k=3, corpus__columns={"id": "doc"})
    assert cli.config_from(cli.parse(["--config", str(printed)])) == expected
    assert load_config(printed) == expected


def test_later_config_files_and_flags_override_earlier_ones(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("corpus:\n  num_seeds: 5\nselect:\n  positive: seed\n")
    b.write_text("corpus:\n  num_seeds: 7\n")
    cfg = cli.config_from(cli.parse(["--config", str(FAKE), "--config", str(a), f"--config={b}", "--corpus.seed=3"]))
    assert (cfg.corpus.num_seeds, cfg.corpus.seed, cfg.select.positive, cfg.llm.backend) == (7, 3, "seed", "fake")
    assert cfg.retrieve.top_n == 8  # from FAKE, untouched by the later files


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=[p.name for p in DATA_CONFIGS])
def test_every_data_config_parses(path):
    assert {"fret_tiny.yaml", "fret_fake.yaml", "fret_wiki.yaml", "fret_scifact.yaml"} <= {p.name for p in DATA_CONFIGS}
    cfg = load_config(path)
    assert cli.config_from(cli.parse(["--config", str(path)])) == cfg == _reference(path)


@pytest.mark.parametrize("flags, message", [
    (["--select.negative=hardest"], "select.negative='hardest' is not valid: expected one of 'lowest', 'random', 'margin', 'none'"),
    (["--llm.backend=gpt"], "llm.backend='gpt' is not valid: expected one of 'transformers', 'vllm', 'openai', 'fake'"),
    (["--corpus.num_seeds=many"], "corpus.num_seeds='many' is not valid: expected int | null"),
    (["--select.postive=seed"], "unknown key or argument 'select.postive'; did you mean 'select.positive'?"),
    (["positive=seed"], "unknown key or argument 'positive'"),
    (["--stage", "rank"], "unknown stage(s) ['rank']"),
    (["--private"], "--private applies to --push-to-hub REPO"),
    (["--push-to-hub", "no-owner"], "name the repository as OWNER/NAME"),
])
def test_bad_flags_are_one_line_exit_2(flags, message, tmp_path, capsys):
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(tmp_path), *flags]) == 2
    assert message in _err_line(capsys)


@pytest.mark.parametrize("text, message", [
    ("select:\n  postive: seed\n", "unknown key or argument 'select.postive'; did you mean 'select.positive'?"),
    ("retrieve:\n  index: annoy\n", "retrieve.index='annoy' is not valid: expected one of 'flat', 'ivf', 'hnsw'"),
    ("wrong_section: 1\n", "unknown key or argument 'wrong_section'"),
    ("select: 3\n", "config section 'select' must be a mapping of its keys, got 3"),
])
def test_a_bad_config_file_is_named_in_one_line(text, message, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert cli.main(["fret", "--config", str(FAKE), "--config", str(bad)]) == 2
    line = _err_line(capsys)
    assert message in line and f"--config {bad}: " in line
    with pytest.raises(ValueError, match="is not valid|unknown key|must be a mapping"):
        load_config(bad)


def test_the_gecko_command_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gecko_lightning", "build", "fret", "--config", str(FAKE),
                           "--select.positive=best", "--output_dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "gecko build: error: select.positive='best' is not valid: expected one of 'llm_top1', 'ql_top1', 'seed'"]


# ---- --from, --merge, --push-to-hub on one finished fake build ----------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fret") / "a"
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(out)]) == 0
    return out


def _no_llm(monkeypatch):
    monkeypatch.setattr(context, "build_llm", lambda *a, **k: pytest.fail("re-selection built an LLM"))


def test_from_reselects_like_a_direct_build_with_0_llm_calls(built, tmp_path, monkeypatch):
    over = ["--select.positive=seed", "--select.negative=none"]
    direct = tmp_path / "direct"
    assert cli.main(["fret", "--config", str(FAKE), *over, "--output_dir", str(direct),
                     f"--cache.path={built / 'llm_cache.sqlite'}"]) == 0  # the independent reference
    _no_llm(monkeypatch)
    out = tmp_path / "b"
    assert cli.main(["fret", "--from", str(built), *over, "--output_dir", str(out)]) == 0
    got, want = read_records(out)[0], read_records(direct)[0]
    assert [r.to_dict() for r in got] == [r.to_dict() for r in want] and got
    assert all(r.negative is None and r.meta["positive_id"] == r.meta["seed_id"] for r in got)
    manifest, source = read_manifest(out), read_manifest(built)
    assert manifest["from"] == str(built)
    for stage in ("generate", "retrieve", "rerank"):
        assert manifest["stages"][stage] == source["stages"][stage]
    assert manifest["llm_calls"] == source["llm_calls"] and manifest["config"]["select"] == {"positive": "seed", "negative": "none", "negative_margin": 0.95, "teacher_margin": None, "positive_margin": None}
    assert manifest["config"]["llm"] == source["config"]["llm"]
    assert not (out / "stages" / "generate.jsonl").exists()  # only what select and export read


def test_from_takes_export_changes_and_later_config_files(built, tmp_path, monkeypatch):
    _no_llm(monkeypatch)
    extra = tmp_path / "extra.yaml"
    extra.write_text("select:\n  negative: random\n")
    out = tmp_path / "gz"
    assert cli.main(["fret", "--from", str(built), "--config", str(extra), "--export.format=jsonl.gz",
                     "--output_dir", str(out)]) == 0
    assert [p.name for p in out.glob("shard-*")] == ["shard-00000.jsonl.gz"]
    assert read_manifest(out)["config"]["select"] == {"positive": "llm_top1", "negative": "random", "negative_margin": 0.95, "teacher_margin": None, "positive_margin": None}


@pytest.mark.parametrize("flags, message", [
    (["--corpus.num_seeds=5"], "only select.*, export.* and test_split.* can change without new LLM calls, but corpus.num_seeds: 24 -> 5"),
    (["--output_dir", "{built}"], "are the same folder"),
    (["--stage", "select"], "drop --stage"),
])
def test_from_refuses_what_needs_the_llm_or_overwrites_the_source(built, tmp_path, flags, message, capsys):
    flags = [f.format(built=built) for f in flags]
    assert cli.main(["fret", "--from", str(built), "--output_dir", str(tmp_path / "b"), *flags]) == 2
    assert message in _err_line(capsys)
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_from_refuses_an_unfinished_build(built, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    (unfinished / "stages").mkdir(parents=True)
    (unfinished / "stages" / "rerank.jsonl").write_text((built / "stages" / "rerank.jsonl").read_text())
    assert cli.main(["fret", "--from", str(unfinished), "--output_dir", str(tmp_path / "b")]) == 2
    assert "no finished build there" in _err_line(capsys)
    assert cli.main(["fret", "--from", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "b")]) == 2
    assert "no such folder" in _err_line(capsys)


def test_merge_without_the_shards_module_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "data_builders.fret.merge", None)  # import fails as if absent
    assert cli.main(["fret", "--merge", str(tmp_path / "x"), "--output_dir", str(tmp_path / "out")]) == 2
    assert "--merge needs data_builders.fret.merge.merge_builds" in _err_line(capsys)


def test_merge_of_a_missing_dir_is_one_line(tmp_path, capsys):
    shards = pytest.importorskip("data_builders.fret.merge", reason="data_builders/fret/merge.py (merge_builds) not written yet")
    if not hasattr(shards, "merge_builds"):
        pytest.skip("data_builders.fret.merge has no merge_builds yet")
    missing = tmp_path / "missing"
    assert cli.main(["fret", "--merge", str(missing), "--output_dir", str(tmp_path / "out")]) == 2
    assert str(missing) in _err_line(capsys)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_push_to_hub_uploads_a_card_that_loads_only_the_records(built, tmp_path, monkeypatch):
    import datasets

    standin = tmp_path / "hub"
    monkeypatch.setenv("GECKO_HUB_STANDIN", str(standin))
    _no_llm(monkeypatch)  # the finished build is reused as it is
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(built), "--push-to-hub", "me/fret-fake"]) == 0
    repo = standin / "dataset" / "me" / "fret-fake"
    assert (repo / "stages" / "rerank.jsonl").is_file() and (repo / "manifest.json").is_file()
    assert not (repo / "llm_cache.sqlite").exists()
    card = (repo / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "shard-*.jsonl"}]}]
    assert front["size_categories"] == ["n<1K"] and "license" in front and "tags" in front
    manifest = read_manifest(built)
    assert f"| records | {manifest['records']} |" in card and manifest["prompt_versions"]["generate"] in card
    rows = datasets.load_dataset(str(repo), split="train", cache_dir=str(tmp_path / "hf"))
    records = read_records(built)[0]
    assert rows["id"] == [r.id for r in records]
    assert rows["query"] == [r.query for r in records] and rows["task"] == [r.task for r in records]
    assert [p["text"] for p in rows["positive"]] == [r.positive.text for r in records]
    assert [n and n["text"] for n in rows["negative"]] == [r.negative and r.negative.text for r in records]


def test_a_card_written_by_hand_is_kept(built, tmp_path):
    import shutil

    from data_builders.hub_card import size_category, write_card

    folder = tmp_path / "copy"
    shutil.copytree(built, folder)
    (folder / "README.md").write_text("# my own card\n")
    write_card(folder, "me/x")
    assert (folder / "README.md").read_text() == "# my own card\n"
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]
