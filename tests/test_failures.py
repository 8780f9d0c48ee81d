"""The failures a user meets around the data, injected one by one into the real `gecko` command.

Each case ends with exit code 2 and exactly one line on stderr that names the file (or, for a
rate-limited server and a file with a byte-order mark, a finished build), and loses nothing: every
finished stage file and cached LLM call is still there, byte for byte, and the same command resumes.
The expected messages are spelled out here in full, so a reworded or two-line message fails.
"""

from __future__ import annotations

import errno
import io
import json
import re
import shutil
import sqlite3
import time
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest
import torch

from data_builders.corpus import files as stage_files
from gecko_lightning.cli import main
from test_builder_openai import FakeServer

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"
TINY_CORPUS = ROOT / "configs" / "assets" / "tiny_corpus" / "corpus.jsonl"
STS = ROOT / "configs" / "assets" / "tiny_eval" / "sts.tsv"
BOM = b"\xef\xbb\xbf"
PROGRESS = re.compile(r"^[^:]+: +\d+%\|.*\|")  # "generate:  50%|█████     | 12/24 [...]"


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """User errors print no traceback unless GECKO_DEBUG is set."""
    monkeypatch.delenv("GECKO_DEBUG", raising=False)
    monkeypatch.chdir(ROOT)


def gecko(capsys, *argv: str) -> tuple[int, list[str]]:
    """Run `gecko ARGV` in this process: (exit code, the lines it wrote to stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    return done.value.code, capsys.readouterr().err.splitlines()


def one_line(code: int, err: list[str]) -> str:
    """The message: the one line on stderr besides progress bars (tqdm's, which a build draws there too)."""
    assert code == 2, err
    message = [line for line in err if line.strip() and not PROGRESS.search(line)]
    assert len(message) == 1 and err[-1] == message[0], err
    return message[0]


def cache_rows(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT key, value FROM calls"))


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (temp files included) by relative path, except the cache (read as rows)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "llm_cache.sqlite" not in p.name}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted fake-LLM build: what every interrupted or re-encoded build must end up as."""
    out = tmp_path_factory.mktemp("reference")
    with pytest.raises(SystemExit) as done:
        main(["build", "fret", "--config", str(FAKE), "--output_dir", str(out)])
    assert done.value.code == 0
    return out


# ---- the disk fills up during `gecko build fret` ------------------------------------------------
def full_disk_at(name: str, after_bytes: int, seen: dict):
    """An `open` for data_builders.corpus.files (the stage files' writer) whose writes to the temp file of stage file `name` fail with
    ENOSPC once `after_bytes` are written, as a full disk does mid-file; `seen` records that moment."""
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" not in mode or not Path(path).name.startswith(f".{name}."):
            return f
        real_write = f.write

        def write(text):
            if f.tell() + len(text) > after_bytes:
                f.flush()
                stages = Path(path).parent
                seen.update(temp=Path(path), temp_bytes=Path(path).stat().st_size, final=(stages / name).exists())
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(text)

        f.write = write
        return f

    return fake_open


def test_a_full_disk_stops_the_build_in_one_line_and_the_same_command_resumes_with_no_repeated_call(
        reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "x"
    seen: dict = {}
    monkeypatch.setattr(stage_files, "open", full_disk_at("rerank.jsonl", 4096, seen), raising=False)
    line = one_line(*gecko(capsys, "build", "fret", "--config", FAKE, "--output_dir", out))
    assert line == (f"gecko build: error: no space left on device writing {out}/stages/rerank.jsonl; finished stages "
                    f"are kept in {out}/stages and finished LLM calls are cached in {out}/llm_cache.sqlite: "
                    f"free space and run the same command again")
    # At the moment the disk filled, half a file existed under a temp name only, never as rerank.jsonl.
    assert seen["temp_bytes"] > 0 and not seen["final"]
    monkeypatch.undo()
    monkeypatch.chdir(ROOT)
    left = files(out)
    assert not seen["temp"].exists() and not any(Path(p).name.startswith(".") for p in left), "a temp file was left"
    assert "stages/rerank.jsonl" not in left and "manifest.json" not in left
    done_before = {p for p in left if p.startswith("stages/") and not p.startswith(("stages/rerank", "stages/select"))}
    assert done_before == {"stages/corpus.jsonl", "stages/generate.jsonl", "stages/generate.stats.json",
                           "stages/retrieve.jsonl", "stages/retrieve.stats.json"}
    ref_files = files(reference)
    assert all(left[p] == ref_files[p] for p in done_before - {"stages/generate.stats.json", "stages/retrieve.stats.json"})
    # Every LLM call of generate and rerank had finished before the write: all are cached, as in the reference.
    assert cache_rows(out / "llm_cache.sqlite") == cache_rows(reference / "llm_cache.sqlite")

    code, _ = gecko(capsys, "build", "fret", "--config", FAKE, "--output_dir", out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == 0 and manifest["llm_calls"] == {"generate": 0, "rerank": 0}
    assert (out / "shard-00000.jsonl").read_bytes() == (reference / "shard-00000.jsonl").read_bytes()


@pytest.mark.parametrize("code, message", [
    (errno.EDQUOT, "disk quota exceeded writing {f}; {kept}: free space within the quota and run the same command again"),
    (errno.EROFS, "read-only file system: cannot write {f}; {kept}: write to another folder or remount it read-write"),
    (errno.EACCES, "permission denied on {f}; {kept}: fix its permissions or use another folder, then run the same command again"),
])
def test_quota_read_only_and_permission_errors_are_one_line_naming_the_file(reference, tmp_path, capsys, monkeypatch, code, message):
    out = tmp_path / "x"
    shutil.copytree(reference, out)
    (out / "manifest.json").unlink()  # unfinished: export must run again, and fails
    real_open = open

    def refuse(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(code, "injected", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(stage_files, "open", refuse, raising=False)
    line = one_line(*gecko(capsys, "build", "fret", "--config", FAKE, "--output_dir", out))
    kept = f"finished stages are kept in {out}/stages and finished LLM calls are cached in {out}/llm_cache.sqlite"
    assert line == "gecko build: error: " + message.format(f=f"{out}/stages/corpus.jsonl", kept=kept)
    assert cache_rows(out / "llm_cache.sqlite") == cache_rows(reference / "llm_cache.sqlite")
    assert files(out) == {p: b for p, b in files(reference).items() if p != "manifest.json"}


def test_a_full_disk_during_fit_names_the_file_and_the_checkpoints_kept_and_other_os_errors_stay_tracebacks(capsys, monkeypatch):
    from gecko_lightning import lightning_cli

    def fail(code):
        def cli(*args, **kwargs):
            raise OSError(code, "injected", "outputs/run/checkpoints/last.ckpt")
        return cli

    monkeypatch.setattr(lightning_cli, "GeckoCLI", fail(errno.ENOSPC))
    line = one_line(*gecko(capsys, "fit", "--config", "configs/tiny.yaml"))
    assert line == ("gecko fit: error: no space left on device writing outputs/run/checkpoints/last.ckpt; checkpoints saved "
                    "before it are whole (add --ckpt_path with the last one to resume from it): free space and run the same "
                    "command again")
    monkeypatch.setattr(lightning_cli, "GeckoCLI", fail(errno.EIO))  # not the user's to fix: a traceback
    with pytest.raises(OSError, match="injected"):
        main(["fit", "--config", "configs/tiny.yaml"])


def test_a_full_disk_under_the_llm_cache_is_not_called_a_corrupt_cache(tmp_path):
    from data_builders.llm.cache import LLMCache

    cache = LLMCache(tmp_path / "c.sqlite")
    cache.put_many({"a": 1})
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    error = cache._failed(full)
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename == str(tmp_path / "c.sqlite")
    assert cache.get_many(["a"]) == {"a": 1}


# ---- a YAML syntax error in a config file ------------------------------------------------------
@pytest.mark.parametrize("command, config", [("fit", "configs/tiny.yaml"), ("build", "configs/data/fret_fake.yaml")])
def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys, monkeypatch, command, config):
    lines = (ROOT / config).read_text().splitlines()
    n = next(i for i, text in enumerate(lines) if text.startswith("  ") and i > 0 and lines[i - 1].startswith("  "))
    lines[n] = lines[n][1:]  # one space short: a mis-indented key
    bad = tmp_path / "bad.yaml"
    bad.write_text("\n".join(lines) + "\n")
    argv = [command] + (["fret"] if command == "build" else []) + ["--config", bad]
    line = one_line(*gecko(capsys, *argv))
    assert line.startswith(f"gecko {command}: error: --config {bad}: YAML syntax error at line {n + 1}, column 2: ")
    assert line.endswith("; fix the indentation or quoting there")
    monkeypatch.setenv("GECKO_DEBUG", "1")  # the traceback is still there for whoever wants it
    with pytest.raises(ValueError, match="YAML syntax error"):
        main([str(a) for a in argv])


# ---- truncated checkpoints and weights ---------------------------------------------------------
def truncated(path: Path) -> bytes:
    """Cut `path` to half its size, as a copy interrupted mid-transfer; returns what is left."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def test_fit_with_a_truncated_ckpt_path_is_one_line(tmp_path, capsys):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"encoder.w": torch.zeros(64, 64)}, "hyper_parameters": {}}, ckpt)
    left = truncated(ckpt)
    line = one_line(*gecko(capsys, "fit", "--config", "configs/tiny.yaml", "--trainer.logger=false",
                           f"--trainer.default_root_dir={tmp_path / 'run'}", "--ckpt_path", ckpt))
    assert line == (f"gecko fit: error: {ckpt} is not a readable Lightning checkpoint for --ckpt_path ({len(left)} bytes "
                    f"and no zip directory at the end, which torch.save writes last): the file is truncated or corrupt, "
                    f"e.g. a copy cut off mid-transfer; copy or write it again")
    assert ckpt.read_bytes() == left and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    from gecko_lightning.encoder import GeckoEncoder

    folder = tmp_path_factory.mktemp("model") / "model"
    GeckoEncoder.from_pretrained(ROOT / "configs/assets/tiny-bert", random_init=True).save_pretrained(folder)
    return folder


SAFETENSORS_CUT = ("{f} is not a readable safetensors file (Error while deserializing header: incomplete metadata, file not "
                   "fully covered): the file is truncated or corrupt, e.g. a copy cut off mid-transfer; copy or write it again")
BIN_CUT = ("{f} is not a readable pytorch_model.bin weights file (PytorchStreamReader failed reading zip archive: failed "
           "finding central directory): the file is truncated or corrupt, e.g. a copy cut off mid-transfer; copy or write it again")


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("command", ["eval", "export", "build"])
def test_a_truncated_weights_file_is_one_line_naming_it(saved_model, tmp_path, capsys, weights, command):
    model = tmp_path / "model"
    shutil.copytree(saved_model, model)
    if weights == "pytorch_model.bin":
        from safetensors.torch import load_file

        torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
        (model / "model.safetensors").unlink()
    left = truncated(model / weights)
    argv = {"eval": ["eval", "--model", model, "--sts", STS],
            "export": ["export", model, tmp_path / "exported"],
            "build": ["build", "fret", "--config", FAKE, "--output_dir", tmp_path / "b", f"--retrieve.embedder={model}",
                      "--retrieve.random_init=false", "--stage", "embed"]}[command]
    line = one_line(*gecko(capsys, *argv))
    expected = (SAFETENSORS_CUT if weights == "model.safetensors" else BIN_CUT).format(f=model / weights)
    assert line == f"gecko {command}: error: {expected}"
    assert (model / weights).read_bytes() == left and not (tmp_path / "exported").exists()


@pytest.mark.parametrize("command", ["eval", "export"])
def test_a_truncated_checkpoint_is_one_line_naming_it(tmp_path, capsys, command):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"encoder.w": torch.zeros(64, 64)}}, ckpt)
    left = truncated(ckpt)
    argv = ["eval", "--model", ckpt, "--sts", STS] if command == "eval" else ["export", ckpt, tmp_path / "out"]
    line = one_line(*gecko(capsys, *argv))
    assert line == (f"gecko {command}: error: {ckpt} is not a readable PyTorch/Lightning checkpoint ({len(left)} bytes and no "
                    f"zip directory at the end, which torch.save writes last): the file is truncated or corrupt, e.g. a copy "
                    f"cut off mid-transfer; copy or write it again")
    assert ckpt.read_bytes() == left and not (tmp_path / "out").exists()


def test_a_folder_with_a_tokenizer_but_no_weights_is_one_line(capsys):
    folder = "configs/assets/tiny-bert"  # config.json and tokenizer files, no weights
    line = one_line(*gecko(capsys, "eval", "--model", folder, "--sts", STS))
    assert line == (f"gecko eval: error: {folder} holds no model weights: expected model.safetensors or pytorch_model.bin "
                    f"(or a sharded *.index.json) beside config.json; pass a folder written by `gecko export` or "
                    f"save_pretrained, or a `gecko fit` .ckpt")


# ---- a rate-limited OpenAI-compatible server ---------------------------------------------------
class RateLimiter:
    """Refuses the requests numbered in `refuse` with `status` and a Retry-After (seconds or HTTP date), and
    keeps refusing the same request until that moment has passed, as a hosted endpoint does."""

    def __init__(self, server: FakeServer, refuse: set[int], status: int = 429, date: bool = False):
        self.server, self.refuse, self.status, self.date = server, refuse, status, date
        self.until: dict[str, float] = {}
        self.refused: list[tuple[str, float]] = []  # (request, until) per refusal
        self.early = 0

    def __call__(self):
        body = json.dumps(self.server.requests[-1], sort_keys=True)
        now = time.time()
        if body in self.until and now < self.until[body]:
            self.early += 1
        elif len(self.server.requests) not in self.refuse:
            return None
        else:
            self.until[body] = float(int(now) + 2) if self.date else now + 1.0
        self.refused.append((body, self.until[body]))
        header = formatdate(self.until[body], usegmt=True) if self.date else "1"
        return self.status, header


@pytest.fixture(scope="module")
def bos_tokenizer_dir(tmp_path_factory):
    from scripts.make_tiny_bos_llm import make

    return make(tmp_path_factory.mktemp("tinybos"))


@pytest.mark.parametrize("status, date", [(429, False), (503, True)])
def test_a_rate_limited_server_is_waited_out_and_the_build_finishes(bos_tokenizer_dir, tmp_path, capsys, status, date):
    server = FakeServer()
    try:
        # Request 1 is the start-up probe's; the probe makes 3, so request 5 is one of generate's.
        limiter = server.limit = RateLimiter(server, {1, 5}, status, date)
        code, _ = gecko(capsys, "build", "fret", "--config", "configs/data/fret_tiny.yaml", "--output_dir", tmp_path / "b",
                        "--llm.backend=openai", "--llm.model=m", f"--llm.tokenizer={bos_tokenizer_dir}",
                        f"--llm.base_url={server.url}", "--llm.max_retries=3", "--llm.backoff_s=0.01",
                        "--llm.concurrency=2", "--llm.timeout_s=5", "--retrieve.top_n=3")
    finally:
        server.close()
    assert code == 0
    assert limiter.early == 0 and len(limiter.refused) == 2  # each refused call came back when told, not sooner
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["llm_retries"] == {"generate": 1, "rerank": 0} and manifest["llm_failures"] == {"generate": 0, "rerank": 0}


def test_a_wait_past_max_wait_s_fails_the_call_at_once(bos_tokenizer_dir):
    from data_builders.config import LLMConfig
    from data_builders.llm import CallFailed, GenRequest
    from data_builders.llm.openai import OpenAILLM

    server = FakeServer()
    server.limit = lambda: (429, "3600")
    try:
        llm = OpenAILLM(LLMConfig(backend="openai", model="m", tokenizer=str(bos_tokenizer_dir), base_url=server.url,
                                  max_retries=3, max_wait_s=5))
        start = time.monotonic()
        (out,) = llm.generate([GenRequest("hi")])
    finally:
        server.close()
    assert time.monotonic() - start < 5 and len(server.requests) == 1
    assert isinstance(out, CallFailed) and "failed after 1 attempts" in out.error
    assert "Retry-After asks 3600 s more, past llm.max_wait_s=5" in out.error


def test_retry_after_reads_seconds_and_http_dates_and_backoff_is_jittered():
    from data_builders.llm.retry_after import backoff_s, parse_retry_after, retry_delay

    now = 1_800_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    waits = [backoff_s(2.0, 3) for _ in range(200)]
    assert all(4.0 <= w < 12.0 for w in waits) and len(set(waits)) > 100  # 2 * 2^2 * [0.5, 1.5)
    assert retry_delay(429, {"retry-after": "4"}, 1.0, 1) == (4.0, True)
    assert retry_delay(500, {"retry-after": "4"}, 1.0, 1)[1] is False  # only 429 and 503 say how long


# ---- files as editors write them ---------------------------------------------------------------
def test_a_corpus_with_a_byte_order_mark_and_crlf_builds_the_same_records(reference, tmp_path, capsys):
    text = TINY_CORPUS.read_bytes()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(BOM + text.replace(b"\n", b"\r\n"))
    code, _ = gecko(capsys, "build", "fret", "--config", FAKE, "--output_dir", tmp_path / "b", f"--corpus.path={corpus}",
                    f"--cache.path={reference / 'llm_cache.sqlite'}")
    assert code == 0
    assert (tmp_path / "b" / "shard-00000.jsonl").read_bytes() == (reference / "shard-00000.jsonl").read_bytes()


def test_record_qrels_sts_and_label_files_with_a_byte_order_mark_read_as_without(reference, tmp_path):
    from gecko_lightning.data.schema import read_records
    from gecko_lightning.evaluation.loaders import load_beir, load_sts, read_labelled

    def with_bom(src: Path, dst: Path) -> Path:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(BOM + src.read_bytes().replace(b"\n", b"\r\n"))
        return dst

    shard = with_bom(reference / "shard-00000.jsonl", tmp_path / "records" / "shard-00000.jsonl")
    assert read_records(shard)[0] == read_records(reference / "shard-00000.jsonl")[0]
    beir = ROOT / "configs/assets/tiny_eval/beir"
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        with_bom(beir / name, tmp_path / "beir" / name)
    assert load_beir(tmp_path / "beir") == load_beir(beir)
    sts = load_sts(with_bom(STS, tmp_path / "sts.tsv"))
    assert (sts.s1, sts.s2, sts.scores) == (load_sts(STS).s1, load_sts(STS).s2, load_sts(STS).scores)
    labels = tmp_path / "labels.csv"
    labels.write_bytes(BOM + b"text,label\r\nhello,a\r\nbye,b\r\n")
    assert (read_labelled(labels).texts, read_labelled(labels).labels) == (["hello", "bye"], ["a", "b"])
