"""The converted-folder cache (data_builders/llm/gguf.py) under processes that write the same folder at once,
as sharded builds starting together on one machine do: each writes its own partial folder, one wins the
rename, the others keep the winner's folder, and nobody removes a folder another process is writing."""

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

from data_builders.llm.gguf import partial_folder, publish_folder

STAMP = {"model": "m", "gguf_file": "f.gguf", "dtype": "float32"}


def _write(out: str, delay: float, q) -> None:
    out = Path(out)
    try:
        tmp = partial_folder(out)
        tmp.mkdir()
        for i in range(5):  # slow, so the processes overlap while writing
            (tmp / f"part{i}").write_text(str(os.getpid()))
            time.sleep(delay)
        (tmp / "gguf_source.json").write_text(json.dumps(STAMP))
        done = publish_folder(tmp, out, lambda: json.loads((out / "gguf_source.json").read_text()) == STAMP)
        q.put(("ok", str(done)))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        q.put(("error", repr(e)))


def test_processes_writing_one_folder_at_once_all_get_it_whole(tmp_path):
    out = tmp_path / "cache" / "model-float32-abc"
    out.parent.mkdir()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_write, args=(str(out), 0.05, q)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert results == [("ok", str(out))] * 4
    assert sorted(f.name for f in out.iterdir()) == ["gguf_source.json"] + [f"part{i}" for i in range(5)]
    # one writer's files, whole: every part written by the same process
    assert len({(out / f"part{i}").read_text() for i in range(5)}) == 1
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no partial folder left behind


def test_a_killed_writers_partial_folder_is_removed_and_a_live_ones_kept(tmp_path):
    out = tmp_path / "model"
    ctx = mp.get_context("fork")
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    live = ctx.Process(target=time.sleep, args=(30,))
    live.start()
    try:
        import socket

        host = socket.gethostname()
        stale = tmp_path / f"model.partial-{host}-{dead.pid}"
        busy = tmp_path / f"model.partial-{host}-{live.pid}"
        elsewhere = tmp_path / f"model.partial-otherhost-{dead.pid}"
        for d in (stale, busy, elsewhere):
            d.mkdir()
        mine = partial_folder(out)
        assert mine.name == f"model.partial-{host}-{os.getpid()}"
        assert not stale.exists() and busy.exists() and elsewhere.exists()
    finally:
        live.kill()
        live.join()


def test_a_different_folder_is_replaced(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old").write_text("x")
    tmp = partial_folder(out)
    tmp.mkdir()
    (tmp / "new").write_text("y")
    assert publish_folder(tmp, out) == out
    assert [f.name for f in out.iterdir()] == ["new"]
