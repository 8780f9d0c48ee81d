"""A folder of documents as a FRet corpus: each format, chunk boundaries, stable ids, duplicates, bad files,
`gecko data chunk`, and a fake-LLM build whose second read makes no LLM call.

The fixture (tests/fixtures/documents, licences in its NOTICE) is real Markdown, text, an mdBook HTML
page and a PDF. References are independent of the reader: the files' own bytes, word sequences the
test writes, and the embedder's tokenizer called directly.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from data_builders import cli
from data_builders.chunk import main as chunk_main
from data_builders.config import CorpusConfig, load_config
from data_builders.corpus import corpus_fingerprint, load_corpus
from data_builders.corpus.documents import reads_documents
from data_builders.fret import runner
from gecko_lightning.data.schema import read_manifest
from gecko_lightning.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "documents"
TOKENIZER = str(ROOT / "configs" / "assets" / "tiny-bert")
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"
READ = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf"}


def _read(path, report=None, **kw) -> list[dict]:
    return load_corpus(CorpusConfig(path=str(path), **kw), tokenizer=TOKENIZER, report=report)


@functools.cache
def _tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def _count(text: str) -> int:
    return len(_tokenizer()(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def fixture_rows() -> tuple[list[dict], dict]:
    report: dict = {}
    return _read(FIXTURE, report), report


def _of(rows: list[dict], rel: str) -> list[dict]:
    return [r for r in rows if r["id"].startswith(rel + "#")]


def test_markdown_drops_front_matter_and_titles_chunks_by_heading_path(fixture_rows):
    rows = _of(fixture_rows[0], "guide/install.md")
    text = " ".join(r["text"] for r in rows)
    assert "tags:" not in text and "---" not in text  # the front matter is gone
    assert rows[0]["title"] == "Installing the widget server"  # its `title`, above the first heading
    by_text = {r["text"]: r["title"] for r in rows}
    gpu = next(t for t in by_text if "nvidia-smi" in t)
    assert by_text[gpu] == "Install > GPU"
    code = next(t for t in by_text if "shell comment" in t)  # a `#` line in a code block is no heading
    assert by_text[code] == "Install" and "# this line is a shell comment" in code
    assert next(r["title"] for r in rows if "widget.yaml" in r["text"]) == "Configure"


def test_html_keeps_the_main_text_without_the_page_chrome(fixture_rows):
    rows = _of(fixture_rows[0], "web/what-is-rustdoc.html")
    raw = (FIXTURE / "web" / "what-is-rustdoc.html").read_text()
    text = " ".join(r["text"] for r in rows)
    assert "The standard Rust distribution ships with a tool called" in " ".join(text.split())
    for chrome in ("Keyboard shortcuts", "navigate between chapters", "Search this book"):
        assert chrome in raw and chrome not in text
    assert {r["title"] for r in rows} >= {"What is rustdoc? > Basic usage", "What is rustdoc? > Summary"}


def test_pdf_and_text_read_page_and_paragraph_text_with_title_or_file_name(fixture_rows):
    pdf = _of(fixture_rows[0], "policies/how-to-read-rustdoc.pdf")
    assert pdf and {r["title"] for r in pdf} == {"How to read rustdoc output"}  # the PDF's own title
    assert "friendly and useful navigation interface" in " ".join(r["text"] for r in pdf)
    txt = _of(fixture_rows[0], "notes.txt")
    assert {r["title"] for r in txt} == {"notes.txt"}
    source = (FIXTURE / "notes.txt").read_text()
    assert " ".join(r["text"] for r in txt).split() == source.split()  # every word, in order, none broken


def test_manifest_counts_match_the_files(fixture_rows):
    _, report = fixture_rows
    files = [Path(d, f) for d, _, fs in os.walk(FIXTURE) for f in fs]
    assert report["files_read"] == sum(f.suffix in READ for f in files) == 4
    assert report["files_skipped"]["unsupported_extension"] == sum(f.suffix not in READ for f in files)
    assert report["chunks"] == len(fixture_rows[0])
    assert report["chunks"] + sum(report["duplicates_dropped"].values()) == report["chunks_before_dedup"]
    assert report["token_lengths"]["max"] <= report["token_lengths"]["limit"] == 200


def _words_file(path: Path, n: int, seed: int) -> list[str]:
    """Sentences of made-up words, each word once (so no chunk repeats another), in paragraphs hard-wrapped
    like a text file; returns its words."""
    rng = random.Random(seed)
    vocab = {"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 11))) for _ in range(3 * n)}
    words = [w + ("." if rng.random() < 0.1 else "") for w in rng.sample(sorted(vocab), n)]
    lines = [" ".join(words[i : i + 9]) for i in range(0, n, 9)]
    path.write_text("\n".join(line + ("\n" if i % 7 == 6 else "") for i, line in enumerate(lines)) + "\n")
    return words


@pytest.mark.parametrize("limit,overlap", [(24, 0), (61, 0), (40, 12)])
def test_no_chunk_is_over_the_limit_or_breaks_a_word(tmp_path, limit, overlap):
    words = _words_file(tmp_path / "long.txt", 900, seed=limit)
    rows = _read(tmp_path, chunk_tokens=limit, chunk_overlap=overlap)
    assert len(rows) > 900 // limit
    for row in rows:
        assert _count(row["text"]) <= limit
        assert set(row["text"].split()) <= set(words)  # a broken word would be a fragment not in the text
    if overlap == 0:  # the chunks are the text, cut: every word once, in order
        assert " ".join(r["text"] for r in rows).split() == words
    else:  # each chunk starts inside the one before it
        assert all(a["text"].split()[-1] in b["text"].split()[:overlap] for a, b in zip(rows, rows[1:]))


def test_editing_one_file_changes_only_that_files_ids_and_texts(tmp_path):
    folder = tmp_path / "docs"
    shutil.copytree(FIXTURE, folder)
    before = {r["id"]: r for r in _read(folder)}
    fp_before = corpus_fingerprint(CorpusConfig(path=str(folder)))
    with open(folder / "guide" / "install.md", "a") as f:
        f.write("\n## Uninstall\n\nRemove the virtual environment folder; nothing else was written.\n")
    after = {r["id"]: r for r in _read(folder)}
    changed = {i for i in before.keys() | after.keys() if before.get(i) != after.get(i)}
    assert changed and all(i.startswith("guide/install.md#") for i in changed)
    assert after.keys() - before.keys() == changed  # the new section's chunk(s), numbered after the old ones
    assert corpus_fingerprint(CorpusConfig(path=str(folder))) != fp_before
    assert _read(folder) == list(after.values())  # a second read gives the same ids in the same order


def test_exact_duplicates_always_and_near_duplicates_on_switch_are_dropped(tmp_path):
    footer = ("This page is provided as is, without warranty of any kind. Report mistakes to the docs team "
              "by email; we read every message. Last reviewed in 2025.")
    near = footer.replace("2025.", "2026.")  # the same footer, a year later
    grams = [{tuple(t.lower().split()[i : i + 3]) for i in range(len(t.split()) - 2)} for t in (footer, near)]
    assert len(grams[0] & grams[1]) / len(grams[0] | grams[1]) > 0.8  # truly similar by the default threshold
    (tmp_path / "a.md").write_text(f"# Alpha\n\nAlpha tells of the first thing.\n\n# Legal\n\n{footer}\n")
    (tmp_path / "b.md").write_text(f"# Beta\n\nBeta tells of the second thing.\n\n# Legal\n\n{footer}\n")
    (tmp_path / "c.md").write_text(f"# Gamma\n\nGamma tells of the third thing.\n\n# Legal\n\n{near}\n")
    report: dict = {}
    rows = _read(tmp_path, report)
    assert [r["id"] for r in rows] == ["a.md#0", "a.md#1", "b.md#0", "c.md#0", "c.md#1"]  # b's copy gone
    assert report["duplicates_dropped"] == {"exact": 1, "near": 0}
    rows = _read(tmp_path, report, near_duplicates=True)
    assert [r["id"] for r in rows] == ["a.md#0", "a.md#1", "b.md#0", "c.md#0"]
    assert report["duplicates_dropped"] == {"exact": 1, "near": 1}


def _bad_files(folder: Path) -> dict[str, str]:
    """Each kind of unreadable file, and a word its reason must hold."""
    from pypdf import PdfWriter

    folder.mkdir(exist_ok=True)
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 4)  # a binary file renamed .txt
    (folder / "latin1.md").write_bytes("# Caf\xe9\n\nna\xefve text\n".encode("latin-1"))  # not UTF-8
    writer = PdfWriter(clone_from=FIXTURE / "policies" / "how-to-read-rustdoc.pdf")
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(folder / "locked.pdf")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a PDF body\n")
    return {"binary.txt": "binary", "latin1.md": "UTF-8", "locked.pdf": "encrypted", "broken.pdf": "PDF"}


def test_bad_files_are_skipped_with_path_and_reason_or_raise(tmp_path):
    shutil.copy(FIXTURE / "notes.txt", tmp_path / "notes.txt")
    bad = _bad_files(tmp_path)
    report: dict = {}
    rows = _read(tmp_path, report)
    assert {r["id"].split("#")[0] for r in rows} == {"notes.txt"}
    assert report["files_read"] == 1 and report["files_skipped"]["unreadable"] == len(bad)
    reasons = {b["path"]: b["reason"] for b in report["unreadable_files"]}
    assert set(reasons) == set(bad) and all(word in reasons[p] for p, word in bad.items())
    with pytest.raises(UserError, match=r"(binary\.txt|broken\.pdf|latin1\.md|locked\.pdf): .*corpus\.on_error=skip"):
        _read(tmp_path, on_error="raise")


def test_an_empty_or_unreadable_folder_is_one_line_naming_the_extensions(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "photo.png").write_bytes(b"\x89PNG")
    with pytest.raises(UserError, match=r"no file it reads \(extensions read: \.txt, \.md.*\.pdf\); 1 other"):
        _read(tmp_path / "empty")
    _bad_files(tmp_path / "bad")
    with pytest.raises(UserError, match=r"none of its 4 file\(s\) \(extensions read: .*\) holds readable text"):
        _read(tmp_path / "bad")


def test_missing_pypdf_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    shutil.copy(FIXTURE / "policies" / "how-to-read-rustdoc.pdf", tmp_path / "a.pdf")
    monkeypatch.setitem(sys.modules, "pypdf", None)  # import pypdf now raises ImportError
    with pytest.raises(UserError, match=r"a\.pdf: reading PDF files needs pypdf: pip install 'gecko-lightning\[pdf\]'"):
        _read(tmp_path)


def test_globs_include_exclude_and_data_folders(tmp_path):
    ids = lambda rows: sorted({r["id"].split("#")[0] for r in rows})  # noqa: E731
    assert ids(_read(f"{FIXTURE}/**/*.md")) == ["guide/install.md"]
    assert ids(_read(FIXTURE, include="**/*.pdf")) == ["policies/how-to-read-rustdoc.pdf"]
    assert ids(_read(FIXTURE, exclude=["web/*", "*.txt"])) == ["guide/install.md", "policies/how-to-read-rustdoc.pdf"]
    (tmp_path / "README.md").write_text("# A dataset card\n")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    assert not reads_documents(CorpusConfig(path=str(tmp_path)))  # a Hub-layout folder stays a dataset


def test_gecko_data_chunk_writes_the_passages_the_build_reads(fixture_rows, tmp_path, capsys):
    from gecko_lightning.data.cli import main as data_main

    out = tmp_path / "passages.jsonl"
    assert data_main(["chunk", str(FIXTURE), "--out", str(out), f"--retrieve.embedder={TOKENIZER}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["chunks"] == fixture_rows[1]["chunks"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["_id"], r["title"], r["text"]) for r in lines] == [(r["id"], r["title"], r["text"]) for r in fixture_rows[0]]
    assert load_corpus(CorpusConfig(path=str(out))) == fixture_rows[0]  # a corpus of its own, same rows
    with pytest.raises(SystemExit):
        chunk_main([str(out), "--out", str(tmp_path / "x.jsonl")])  # a file is not a folder of documents


def test_build_from_a_mixed_folder_then_a_second_read_makes_no_llm_call(tmp_path):
    folder = tmp_path / "docs"
    shutil.copytree(FIXTURE, folder)
    flags = ["--corpus.path", str(folder), "--corpus.num_seeds=null", "--corpus.chunk_tokens=100"]
    out = tmp_path / "build"
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(out), *flags]) == 0
    first = read_manifest(out)
    docs = first["documents"]
    assert docs["files_read"] == 4 and docs["files_skipped"]["unsupported_extension"] == 1
    assert first["stages"]["generate"]["seeds"] == docs["chunks"] == first["stages"]["generate"]["corpus_passages"]
    ids = [json.loads(line)["id"] for line in (out / "stages" / "corpus.jsonl").read_text().splitlines()]
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(out), "--force", *flags]) == 0
    second = read_manifest(out)
    assert sum(second["llm_calls"].values()) == 0 and second["corpus_sha256"] == first["corpus_sha256"]
    assert [json.loads(line)["id"] for line in (out / "stages" / "corpus.jsonl").read_text().splitlines()] == ids
    # a manifest written before the documents keys existed still describes this build
    added = ("include", "exclude", "chunk_overlap", "near_duplicates", "near_duplicate_threshold", "on_error")
    stored = {**second["config"], "corpus": {k: v for k, v in second["config"]["corpus"].items() if k not in added}}
    (out / "manifest.json").write_text(json.dumps({**second, "config": stored}))
    cfg = load_config(FAKE, {"output_dir": str(out), "corpus.path": str(folder), "corpus.num_seeds": None,
                             "corpus.chunk_tokens": 100})
    assert runner.finished_build(cfg) is not None
