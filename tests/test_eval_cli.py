"""`gecko eval` end to end on tiny local files, and its messages for bad input."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.evaluation import runner
from gecko_lightning.evaluation.cli import main
from gecko_lightning.evaluation.loaders import load_beir, load_sts
from gecko_lightning.evaluation.prompts import PromptMap

REPO = Path(__file__).resolve().parents[1]
TINY_EVAL = "configs/assets/tiny_eval"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model")
    GeckoEncoder.from_pretrained(REPO / "configs/assets/tiny-bert", random_init=True, max_length=64).save_pretrained(out)
    return out


def test_offline_eval_writes_json_and_table(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "r.json"
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(8)))
    (tmp_path / "test.csv").write_text("text,label\ngood x,pos\nbad y,neg\n")
    code = main(["--model", str(model_dir), "--beir", f"{TINY_EVAL}/beir", "--sts", f"{TINY_EVAL}/sts.tsv",
                 "--classification", str(tmp_path), "--cls-samples-per-label", "0", "--dims", "32", "16", "--output", str(out),
                 "--label", "variant=tuned", "--label", "seed=0"])
    assert code == 0
    results = json.loads(out.read_text())
    meta = results.pop("_meta")  # how the scores were made: what `gecko report` groups by
    # a saved folder that records no format and declares no prompts reads raw text
    assert meta == {"labels": {"variant": "tuned", "seed": "0"}, "model": str(model_dir), "prompts": "none",
                    "split": "test", "dims": [32, 16]}
    assert set(results) == {"beir", "sts.tsv", tmp_path.name}
    assert set(results["beir"]) == {f"{m}@{d}" for m in ("ndcg_at_10", "recall_at_100", "mrr_at_10") for d in (32, 16)}
    assert set(results["sts.tsv"]) == {"spearman@32", "spearman@16"}
    assert all(0 <= v <= 100 for per in results.values() for v in per.values())
    assert "ndcg_at_10@16" in capsys.readouterr().out
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "a temp file was left behind"


def test_beir_scores_equal_a_brute_force_reference(model_dir):
    """Our search + metrics equal a full sort of every cosine score, per dim."""
    enc = GeckoEncoder.from_pretrained(model_dir)
    data = load_beir(REPO / TINY_EVAL / "beir")
    got = runner.evaluate_beir(enc, data, [None, 8], "gecko", PromptMap.load(), show_progress=False)
    q_texts, d_texts = runner.beir_texts(data, "gecko", PromptMap.load())
    q, d = enc.encode(q_texts), enc.encode(d_texts)
    d_ids = list(data.corpus)
    for dim in (None, 8):
        qq, dd = runner.truncate(q, dim), runner.truncate(d, dim)
        hits = []
        for i, qid in enumerate(data.queries):
            ranked = [d_ids[j] for j in torch.argsort(qq[i] @ dd.T, descending=True).tolist()]
            (rel,) = data.qrels[qid]
            hits.append(1 / (ranked.index(rel) + 1) if ranked.index(rel) < 10 else 0.0)
        assert got[dim]["mrr_at_10"] == pytest.approx(100 * sum(hits) / len(hits), abs=1e-6)


def test_sts_spearman_matches_scipy_reference(model_dir):
    from scipy.stats import spearmanr
    enc = GeckoEncoder.from_pretrained(model_dir)
    data = load_sts(REPO / TINY_EVAL / "sts.tsv")
    got = runner.evaluate_sts(enc, data, [None], "none", show_progress=False)[None]["spearman"]
    a, b = enc.encode(data.s1), enc.encode(data.s2)
    assert got == pytest.approx(100 * spearmanr((a * b).sum(-1).numpy(), data.scores).correlation, abs=1e-4)


def test_gecko_prompts_format_inputs():
    pm = PromptMap.load()
    data = load_beir(REPO / TINY_EVAL / "beir")
    data.name = "SciFact"
    q, d = runner.beir_texts(data, "gecko", pm)
    assert q[0].startswith("task: fact checking | query: ")
    assert d[0].startswith("title: Róisín Owens | text: Róisín Owens is")
    q, d = runner.beir_texts(data, "none", pm)
    assert d[0].startswith("Róisín Owens Róisín Owens is") and not q[0].startswith("task:")
    assert pm.is_symmetric("CQADupstackEnglishRetrieval") and not pm.is_symmetric("SciFact")


def test_missing_qrels_message(model_dir, tmp_path, capsys):
    (tmp_path / "set").mkdir()
    assert main(["--model", str(model_dir), "--beir", str(tmp_path / "set")]) == 2
    assert f"qrels file {tmp_path / 'set' / 'qrels' / 'test.tsv'} not found" in capsys.readouterr().err


def test_non_numeric_sts_score_message(model_dir, tmp_path, capsys):
    f = tmp_path / "pairs.csv"
    f.write_text("s1,s2,score\na,b,n/a\n")
    assert main(["--model", str(model_dir), "--sts", str(f)]) == 2
    assert "pairs.csv:2: score 'n/a' is not a number" in capsys.readouterr().err


def test_checkpoint_without_encoder_message(tmp_path, capsys):
    ckpt = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"linear.weight": torch.zeros(1)}}, ckpt)
    assert main(["--model", str(ckpt), "--sts", str(REPO / TINY_EVAL / "sts.tsv")]) == 2
    assert "bad.ckpt holds no encoder weights" in capsys.readouterr().err


def test_bad_dim_and_nothing_to_do(model_dir, capsys):
    assert main(["--model", str(model_dir)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["--model", str(model_dir), "--sts", str(REPO / TINY_EVAL / "sts.tsv"), "--dims", "999"]) == 2
    assert "dim 999 is outside 1..32" in capsys.readouterr().err


def test_eval_lightning_checkpoint_equals_encoder(tmp_path, tiny_bert):
    from gecko_lightning.evaluation.models import load_encoder
    from gecko_lightning.module import GeckoModule

    torch.manual_seed(0)
    module = GeckoModule(str(tiny_bert), random_init=True, max_length=64, matryoshka_dims=[32, 16])
    ckpt = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": L.__version__}, ckpt)
    enc = load_encoder(str(ckpt))
    torch.testing.assert_close(enc.encode(["hello world"]), module.encoder.encode(["hello world"]))


def test_package_model_keeps_its_sentence_transformers_token_limit(model_dir, tmp_path, monkeypatch):
    """`package:` folders are read like any folder: sentence_bert_config.json's max_seq_length, not 512."""
    import shutil

    from gecko_lightning.evaluation.models import load_encoder

    folder = tmp_path / "st_models_pkg" / "model"
    shutil.copytree(model_dir, folder)
    (folder / "gecko_encoder.json").unlink()  # a plain sentence-transformers folder
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    (tmp_path / "st_models_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_encoder(str(folder)).max_length == 24
    assert load_encoder("package:st_models_pkg/model").max_length == 24
    assert load_encoder("package:st_models_pkg/model", max_length=8).max_length == 8


def test_a_non_finite_score_is_never_written(model_dir, tmp_path, capsys, monkeypatch):
    """Standard JSON has no NaN: --output must not write one, and the run must not exit 0."""
    monkeypatch.setattr(runner, "evaluate_sts", lambda *a, **k: {None: {"spearman": float("nan")}})
    out = tmp_path / "r.json"
    assert main(["--model", str(model_dir), "--sts", str(REPO / TINY_EVAL / "sts.tsv"), "--output", str(out)]) == 2
    assert "sts.tsv: spearman is nan" in capsys.readouterr().err
    assert not out.exists()


def test_repeated_dataset_flags_add_up_instead_of_replacing():
    """`--beir A --beir B` scores both, as `--beir A B` does (the second flag used to drop the first)."""
    from gecko_lightning.evaluation.cli import build_parser

    args = build_parser().parse_args(["--model", "m", "--beir", "a", "--beir", "b", "c", "--sts", "s1", "--sts", "s2",
                                      "--classification", "k1", "--classification", "k2", "--mteb", "t1", "--mteb", "t2"])
    assert (args.beir, args.sts, args.classification, args.mteb) == (["a", "b", "c"], ["s1", "s2"], ["k1", "k2"], ["t1", "t2"])
    assert build_parser().parse_args(["--model", "m"]).beir == []


def test_two_sets_over_one_corpus_encode_it_once(model_dir, tmp_path, monkeypatch):
    """A build's split beside the human set: the shared corpus is encoded once, each set scores as it
    does alone, and a set whose corpus differs by one character is encoded afresh."""
    import shutil
    src = REPO / TINY_EVAL / "beir"
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(src, same)
    shutil.copytree(src, other)
    rows = (other / "corpus.jsonl").read_text().splitlines()
    first = json.loads(rows[0])
    first["text"] += "!"
    (other / "corpus.jsonl").write_text("\n".join([json.dumps(first)] + rows[1:]) + "\n")
    # one query fewer in the copy, so its scores can differ from the original's
    queries = (same / "queries.jsonl").read_text().splitlines()
    (same / "queries.jsonl").write_text("\n".join(queries[1:]) + "\n")
    dropped = json.loads(queries[0])["_id"]
    qrels = (same / "qrels" / "test.tsv").read_text().splitlines()
    (same / "qrels" / "test.tsv").write_text("\n".join(r for r in qrels if r.split("\t")[0] != dropped) + "\n")

    alone = {}
    for folder in (src, same, other):
        alone[folder.name] = main(["--model", str(model_dir), "--beir", str(folder), "--prompts", "none",
                                   "--output", str(tmp_path / f"{folder.name}.json")])
        alone[folder.name] = json.loads((tmp_path / f"{folder.name}.json").read_text())[folder.name]

    calls = []
    real = GeckoEncoder.encode
    monkeypatch.setattr(GeckoEncoder, "encode", lambda self, texts, *a, **k: calls.append(len(texts)) or real(self, texts, *a, **k))
    out = tmp_path / "all.json"
    assert main(["--model", str(model_dir), "--beir", str(src), "--beir", str(same), "--beir", str(other),
                 "--prompts", "none", "--output", str(out)]) == 0
    together = json.loads(out.read_text())
    n_docs = len(rows)
    assert calls.count(n_docs) == 2, calls  # the shared corpus once, the altered one once
    assert len(calls) == 5  # three query sets, two corpora
    for name in ("beir", "same", "other"):
        assert together[name] == pytest.approx(alone[name], abs=1e-9)
