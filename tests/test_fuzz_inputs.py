"""Fuzz the readers of user files: valid files corrupted at random (bytes, lines, values, keys, encodings).

Each outcome must be a clean error naming the file (and line), or a result equal to what a small
reference reader, written here from the documented rules, makes of the corrupted file: never a
traceback, a coerced value or a non-finite metric. The references are deliberately plain: they
parse each line with the standard library and check types by hand.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import tempfile
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gecko_lightning.data.cli import validate
from gecko_lightning.data.schema import SchemaError, iter_records, read_records
from gecko_lightning.evaluation import metrics
from gecko_lightning.evaluation.loaders import EvalDataError, load_beir, load_sts

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=12)
WORDS = TEXT.filter(str.strip)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)
ENCODINGS = ("latin-1", "cp1252", "utf-16", "utf-8-sig", "utf-32")


class Invalid(Exception):
    """The reference rejects the input."""


# ---- corruption -----------------------------------------------------------------------------
def corrupt(draw, lines: list[bytes], json_lines: bool) -> list[bytes]:
    """Apply 1-3 random corruptions to a file given as lines (without their b"\\n")."""
    lines = list(lines)
    if draw(st.integers(0, 9)) == 0:  # now and then the whole file in another encoding
        text = b"\n".join(lines).decode("utf-8")
        lines = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace").split(b"\n")
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            lines = [b""]
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["byte", "line", "value", "key"] if json_lines else ["byte", "line", "field"]))
        if kind == "byte":
            lines[i] = _byte_op(draw, lines[i])
        elif kind == "line":
            lines = _line_op(draw, lines, i)
        elif kind == "field":
            fields = lines[i].split(b"\t")
            j = draw(st.integers(0, len(fields)))
            new = draw(st.sampled_from(["nan", "inf", "1.5", "-1", "2", "1e3", "", "1.0", " 1", "1_0", "\u0661", "d99", "q99"])
                       | TEXT).encode()
            fields[j:j + draw(st.integers(0, 1))] = [new]
            lines[i] = b"\t".join(fields)
        else:
            lines[i] = _json_op(draw, lines[i], kind)
    return lines


def _byte_op(draw, line: bytes) -> bytes:
    pos = draw(st.integers(0, len(line)))
    byte = bytes([draw(st.integers(0, 255).filter(lambda b: b != 10))])
    op = draw(st.sampled_from(["replace", "insert", "delete"]))
    return line[:pos] + (b"" if op == "delete" else byte) + line[pos + (op != "insert"):]


def _line_op(draw, lines: list[bytes], i: int) -> list[bytes]:
    op = draw(st.sampled_from(["delete", "duplicate", "blank", "garbage", "swap"]))
    if op == "delete":
        return lines[:i] + lines[i + 1:]
    if op == "duplicate":
        return lines[: i + 1] + lines[i:]
    if op == "swap" and i + 1 < len(lines):
        return lines[:i] + [lines[i + 1], lines[i]] + lines[i + 2:]
    new = b"" if op == "blank" else draw(st.binary(max_size=30)).replace(b"\n", b"")
    return lines[:i] + [new] + lines[i + 1:]


def _json_op(draw, line: bytes, kind: str) -> bytes:
    try:
        obj = json.loads(line)
    except ValueError:
        return line
    if not isinstance(obj, dict) or not obj:
        return line
    holder = obj
    nested = [k for k, v in obj.items() if isinstance(v, dict) and v]
    if nested and draw(st.booleans()):
        holder = obj[draw(st.sampled_from(nested))]
    key = draw(st.sampled_from(sorted(holder)))
    if kind == "value":
        holder[key] = draw(JSON_VALUES)
    else:
        op = draw(st.sampled_from(["rename", "typo", "delete", "extra", "repeat"]))
        if op == "repeat":  # a repeated key, which json.loads would settle silently by keeping the last
            text = json.dumps(obj, allow_nan=True)
            return (text[:-1] + f", {json.dumps(key)}: {json.dumps(draw(JSON_VALUES))}}}").encode()
        value = holder.pop(key)
        if op == "rename":
            holder[draw(st.text(max_size=6))] = value
        elif op == "typo":
            holder[key[1:] + key[:1]] = value
        elif op == "extra":
            holder[key] = value
            holder[draw(st.text(min_size=1, max_size=6))] = draw(JSON_VALUES)
    # surrogatepass: a lone surrogate from an earlier byte corruption becomes bytes that are not UTF-8
    return json.dumps(obj, allow_nan=True, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


# ---- reference parsing --------------------------------------------------------------------------
def strict_json(text: str):
    def no_constant(name):
        raise Invalid(name)

    def unique(pairs):
        if len({k for k, _ in pairs}) != len(pairs):
            raise Invalid("repeated key")
        return dict(pairs)

    value = json.loads(text, parse_constant=no_constant, object_pairs_hook=unique)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be encoded
    return value


def decoded(raw: bytes) -> str:
    return raw.removesuffix(b"\r").decode("utf-8")


def file_lines(data: bytes) -> list[bytes]:
    """A file's lines; a UTF-8 byte-order mark at its very start is no part of the text (utf-8-sig)."""
    return data.removeprefix(b"\xef\xbb\xbf").split(b"\n")


def ref_passage(p) -> dict:
    p = {"text": p} if isinstance(p, str) else p
    if not isinstance(p, dict) or set(p) - {"text", "title"}:
        raise Invalid("passage")
    text, title = p.get("text"), p.get("title")
    if not (isinstance(text, str) and text.strip()) or not (title is None or isinstance(title, str)):
        raise Invalid("passage fields")
    return {"text": text, "title": title or None}


def ref_record(raw: bytes) -> dict | None:
    """The record a line must give (a dict in `Record.to_dict()` form), None for a blank line."""
    text = decoded(raw)
    if not text.strip():
        return None
    d = strict_json(text)
    fields = {"id", "source", "task", "query", "positive", "negative", "symmetric", "meta"}
    if not isinstance(d, dict) or set(d) - fields or {"id", "source", "task", "query", "positive"} - set(d):
        raise Invalid("keys")
    if not all(isinstance(d[k], str) for k in ("id", "source", "task", "query")):
        raise Invalid("types")
    if not d["id"].strip() or not d["query"].strip() or d["positive"] is None:
        raise Invalid("empty")
    symmetric, meta = d.get("symmetric", False), d.get("meta")
    if type(symmetric) is not bool or not (meta is None or isinstance(meta, dict)):
        raise Invalid("symmetric/meta")
    negative = None if d.get("negative") is None else ref_passage(d["negative"])
    return {"id": d["id"], "source": d["source"], "task": d["task"], "query": d["query"],
            "positive": ref_passage(d["positive"]), "negative": negative, "symmetric": symmetric, "meta": meta or {}}


def classify(data: bytes) -> tuple[list[dict], list[int]]:
    """(records in order, numbers of the bad lines) that the reference makes of a whole file."""
    good, bad = [], []
    for n, raw in enumerate(file_lines(data), start=1):
        try:
            record = ref_record(raw)
        except (Invalid, ValueError):
            bad.append(n)
            continue
        if record is not None:
            good.append(record)
    return good, bad


# ---- the record reader and `gecko data validate` ----------------------------------------------
@st.composite
def record_files(draw) -> tuple[list[bytes], bool]:
    rows = []
    for i in range(draw(st.integers(1, 5))):
        passage = st.builds(lambda t, ti: {"text": t, "title": ti}, WORDS, st.none() | WORDS)
        rows.append({"id": f"r{i}", "source": draw(TEXT), "task": draw(TEXT), "query": draw(WORDS),
                     "positive": draw(passage), "negative": draw(st.none() | passage),
                     "symmetric": draw(st.booleans()),
                     "meta": draw(st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=2))})
    lines = [json.dumps(r, ensure_ascii=draw(st.booleans())).encode() for r in rows]
    return corrupt(draw, lines, json_lines=True), draw(st.booleans())


@FUZZ
@given(record_files())
def test_record_reader_and_validate_on_corrupted_files(case):
    lines, gz = case
    data = b"\n".join(lines) + b"\n"
    good, bad = classify(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("d.jsonl.gz" if gz else "d.jsonl")
        path.write_bytes(gzip.compress(data) if gz else data)

        records, stats = read_records(path, on_error="skip")
        assert [r.to_dict() for r in records] == good  # nothing coerced, nothing lost
        assert [int(m.split(":")[1]) for m in stats.skipped] == bad
        assert all(m.startswith(f"{path}:") and "\n" not in m and "\r" not in m for m in stats.skipped)

        try:
            assert [r.to_dict() for r in iter_records(path)] == good and not bad
        except SchemaError as e:
            assert bad and str(e).startswith(f"{path}:{bad[0]}: ")

        out = io.StringIO()
        code = validate(str(path), out)
        text = out.getvalue()
        assert f"{path}: {len(good)} valid records, {len(bad)} invalid" in text
        assert [int(m.group(1)) for m in re.finditer(rf"  error: {re.escape(str(path))}:(\d+): ", text)] == bad
        assert code == (1 if bad or not good else 0)


@FUZZ
@given(record_files(), st.data())
def test_a_cut_short_gzip_shard_reads_its_whole_lines_then_one_error(case, data):
    lines, _ = case
    raw = b"\n".join(lines) + b"\n"
    packed = gzip.compress(raw)
    cut = packed[: data.draw(st.integers(0, len(packed) - 1))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl.gz"
        path.write_bytes(cut)
        records, stats = read_records(path, on_error="skip")
    *_, last = stats.skipped
    assert re.match(rf"{re.escape(str(path))}:\d+: (the gzip data is cut short or corrupt|the file is empty)", last)
    broke_at = int(last.split(":")[1])
    readable = zlib.decompressobj(wbits=31).decompress(cut)  # the reference: what zlib gets out of it
    complete = readable.split(b"\n")[: broke_at - 1]
    good, bad = classify(b"\n".join(complete))
    assert broke_at == readable.count(b"\n") + 1
    assert [r.to_dict() for r in records] == good
    assert [int(m.split(":")[1]) for m in stats.skipped[:-1]] == bad


# ---- gecko eval: BEIR folders -----------------------------------------------------------------
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # plain decimal notation


def ref_float(text: str) -> float:
    if not NUMBER.fullmatch(text.strip(" \t")) or not math.isfinite(float(text.strip(" \t"))):
        raise Invalid("score")
    return float(text.strip(" \t"))


def ref_grade(text: str) -> int:
    value = ref_float(text)
    if value != int(value):
        raise Invalid("grade")
    return int(value)


def ref_beir(folder: Path) -> tuple[dict, dict, dict]:
    def rows(name: str, fields: dict) -> dict:
        out = {}
        for raw in file_lines((folder / name).read_bytes()):
            text = decoded(raw)
            if not text.strip():
                continue
            d = strict_json(text)
            if not isinstance(d, dict) or not isinstance(d.get("_id"), str) or d["_id"] in ("", *out):
                raise Invalid("_id")
            out[d["_id"]] = tuple(fields[f](d) for f in fields)
        if not out:
            raise Invalid("empty")
        return out

    def string(key: str, nullable: bool = False):
        def get(d):
            if nullable and d.get(key) is None:
                return ""
            if not isinstance(d.get(key), str):
                raise Invalid(key)
            return d[key]
        return get

    corpus = rows("corpus.jsonl", {"title": string("title", nullable=True), "text": string("text")})
    queries = {q: t for q, (t,) in rows("queries.jsonl", {"text": string("text")}).items()}
    qrels: dict[str, dict[str, int]] = {}
    for n, raw in enumerate(file_lines((folder / "qrels" / "test.tsv").read_bytes()), start=1):
        text = decoded(raw)
        cols = text.split("\t")
        if not text.strip() or (n == 1 and cols[0] == "query-id"):
            continue
        if len(cols) != 3 or cols[0] not in queries or cols[1] not in corpus or cols[1] in qrels.get(cols[0], {}):
            raise Invalid("qrels row")
        qrels.setdefault(cols[0], {})[cols[1]] = ref_grade(cols[2])
    if not any(g > 0 for rel in qrels.values() for g in rel.values()):
        raise Invalid("no relevant")
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


@st.composite
def beir_folders(draw) -> dict[str, list[bytes]]:
    docs = [{"_id": f"d{i}", "text": draw(TEXT)} for i in range(draw(st.integers(1, 4)))]
    for d in docs:
        title = draw(st.sampled_from(["absent", "null", "text"]))
        if title != "absent":
            d["title"] = None if title == "null" else draw(TEXT)
    queries = [{"_id": f"q{i}", "text": draw(TEXT)} for i in range(draw(st.integers(1, 3)))]
    pairs = draw(st.lists(st.tuples(st.sampled_from(queries), st.sampled_from(docs)), min_size=1, max_size=5,
                          unique_by=lambda p: (p[0]["_id"], p[1]["_id"])))
    qrels = [b"query-id\tcorpus-id\tscore"] + [f"{q['_id']}\t{d['_id']}\t{1 + k % 2}".encode() for k, (q, d) in enumerate(pairs)]
    files = {"corpus.jsonl": [json.dumps(d).encode() for d in docs],
             "queries.jsonl": [json.dumps(q).encode() for q in queries], "qrels/test.tsv": qrels}
    name = draw(st.sampled_from(sorted(files)))
    files[name] = corrupt(draw, files[name], json_lines=name.endswith(".jsonl"))
    return files


@FUZZ
@given(beir_folders())
def test_beir_loader_on_corrupted_folders(files):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        (folder / "qrels").mkdir(parents=True)
        for name, lines in files.items():
            (folder / name).write_bytes(b"\n".join(lines) + b"\n")
        try:
            expected = ref_beir(folder)
        except (Invalid, ValueError):
            expected = None
        try:
            data = load_beir(folder)
        except EvalDataError as e:
            assert expected is None, f"rejected a valid folder: {e}"
            assert re.match(rf"{re.escape(str(folder))}/(corpus\.jsonl|queries\.jsonl|qrels/test\.tsv)(:\d+)?[: ]", str(e))
            assert "\n" not in str(e) and "\r" not in str(e)
            return
    assert expected is not None, "accepted a folder the reference rejects"
    assert (data.corpus, data.queries, data.qrels) == expected
    run = {q: sorted(data.corpus) for q in data.queries}
    assert all(math.isfinite(v) for v in metrics.retrieval_metrics(run, data.qrels).values())


# ---- gecko eval: STS files --------------------------------------------------------------------
LAYOUTS = {"tsv": ("pairs.tsv", "\t"), "csv": ("pairs.csv", ","), "stsb": ("sts-test.csv", None), "jsonl": ("pairs.jsonl", None)}


def ref_sts(data: bytes, layout: str) -> tuple[list[str], list[str], list[float]]:
    texts = [t for t in (decoded(raw) for raw in file_lines(data)) if t.strip()]
    if layout in ("tsv", "csv"):
        rows = [next(csv.reader([t], delimiter=LAYOUTS[layout][1])) for t in texts[1:]]
        if any(len(r) != 3 for r in rows):
            raise Invalid("columns")
        pairs = [(r[0], r[1], ref_float(r[2])) for r in rows]
    elif layout == "stsb":
        cols = [t.split("\t") for t in texts]
        if any(len(c) < 7 for c in cols):
            raise Invalid("columns")
        pairs = [(c[5], c[6], ref_float(c[4])) for c in cols]
    else:
        pairs = [_ref_json_pair(strict_json(t)) for t in texts]
    if len(pairs) < 2 or len({p[2] for p in pairs}) < 2:
        raise Invalid("no spearman")
    return [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]


def _ref_json_pair(d) -> tuple[str, str, float]:
    if not isinstance(d, dict):
        raise Invalid("row")
    a, b = ("s1", "s2") if "s1" in d else ("sentence1", "sentence2")
    score = d.get("score")
    if not (isinstance(d.get(a), str) and isinstance(d.get(b), str)) or type(score) not in (int, float):
        raise Invalid("types")
    try:
        if not math.isfinite(score):
            raise Invalid("score")
    except OverflowError:  # an integer too large for a float
        raise Invalid("score") from None
    return d[a], d[b], float(score)


@st.composite
def sts_files(draw) -> tuple[str, list[bytes], bool]:
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    sentence = TEXT.filter(lambda s: "\t" not in s) if layout == "stsb" else TEXT
    n = draw(st.integers(2, 5))
    scores = [0.0, 5.0] + draw(st.lists(st.floats(0, 5), min_size=n - 2, max_size=n - 2))
    pairs = [(draw(sentence), draw(sentence), s) for s in scores]
    if layout in ("tsv", "csv"):
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=LAYOUTS[layout][1], lineterminator="\n")
        writer.writerows([("s1", "s2", "score") if layout == "tsv" else ("sentence1", "sentence2", "score"), *pairs])
        lines = buf.getvalue().encode().split(b"\n")[:-1]
    elif layout == "stsb":
        lines = [f"main\tMSRvid\t2012\t{i:04d}\t{s!r}\t{a}\t{b}".encode() for i, (a, b, s) in enumerate(pairs)]
    else:
        lines = [json.dumps({"s1": a, "s2": b, "score": s}).encode() for a, b, s in pairs]
    corrupted = corrupt(draw, lines, json_lines=layout == "jsonl")
    header_kept = layout not in ("tsv", "csv") or next((x for x in corrupted if x.strip()), None) == lines[0]
    return layout, corrupted, header_kept


@FUZZ
@given(sts_files())
def test_sts_loader_on_corrupted_files(case):
    layout, lines, header_kept = case
    data = b"\n".join(lines) + b"\n"
    try:
        expected = ref_sts(data, layout)
    except (Invalid, ValueError, csv.Error):
        expected = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / LAYOUTS[layout][0]
        path.write_bytes(data)
        try:
            pairs = load_sts(path)
        except EvalDataError as e:
            assert expected is None or not header_kept, f"rejected a valid file: {e}"
            assert str(path) in str(e) and "\n" not in str(e) and "\r" not in str(e)
            return
    assert expected is not None, "accepted a file the reference rejects"
    assert (pairs.s1, pairs.s2, pairs.scores) == expected
    assert math.isfinite(metrics.spearman(list(range(len(pairs.scores))), pairs.scores))


# ---- the builder's corpus reader ----------------------------------------------------------------
def ref_corpus(data: bytes) -> tuple[list[dict], int | None]:
    """(passages, None) or (passages before the error, 1-based line of the first bad line)."""
    rows, seen = [], set()
    lines = file_lines(data)
    for n, raw in enumerate(lines[:-1] if data.endswith(b"\n") else lines, start=1):
        try:
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            row = strict_json(line)
            if not isinstance(row, dict):
                raise Invalid("row")
            pid = row["_id"] if "_id" in row else row.get("id")
            if isinstance(pid, bool) or not isinstance(pid, (str, int)) or str(pid) == "":
                raise Invalid("id")
            text, title = row.get("text"), row.get("title")
            if not isinstance(text, str) or (title is not None and not isinstance(title, str)):
                raise Invalid("text/title")
            if str(pid) in seen:
                raise Invalid("duplicate")
            seen.add(str(pid))
        except (Invalid, ValueError):
            return rows, n
        if text.strip():
            rows.append({"id": str(pid), "title": title or None, "text": text})
    return rows, None


@st.composite
def corpus_files(draw) -> list[bytes]:
    rows = [{"_id": draw(st.sampled_from([f"p{i}", i])), "title": draw(st.none() | WORDS), "text": draw(WORDS)}
            for i in range(draw(st.integers(1, 6)))]
    return corrupt(draw, [json.dumps(r, ensure_ascii=draw(st.booleans())).encode() for r in rows], json_lines=True)


@FUZZ
@given(corpus_files())
def test_builder_corpus_reader_on_corrupted_files(lines):
    from data_builders.config import CorpusConfig
    from data_builders.corpus import load_corpus
    from gecko_lightning.errors import UserError

    data = b"\n".join(lines) + b"\n"
    good, bad_line = ref_corpus(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        path.write_bytes(data)
        try:
            rows = load_corpus(CorpusConfig(path=str(path)))
        except UserError as e:
            message = str(e)
            assert "\n" not in message and "\r" not in message
            if bad_line is not None:
                assert message.startswith(f"{path}:{bad_line}: ")
            else:  # the only clean error on a valid file: nothing with text in it
                assert not good and message == f"corpus {str(path)!r} has no passages with text"
            return
        assert bad_line is None and rows == good
