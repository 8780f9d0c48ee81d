"""One text contract: a record becomes the same string in training, in evaluation and in an export's prompts.

The expected strings are written out by hand from the paper's Table 7 (gecko) and plain concatenation,
so a drift on either side, or in the shared Template, fails here.
"""

import pytest

from gecko_lightning.data.formatting import format_record
from gecko_lightning.data.schema import Passage, Record
from gecko_lightning.evaluation import runner
from gecko_lightning.evaluation.loaders import BeirSet
from gecko_lightning.evaluation.prompts import PromptMap
from gecko_lightning.export import sentence_transformers_prompts
from gecko_lightning.text_format import GECKO, DeclaredPrompts, Template, resolve_format, template_name

PLAIN = Template.from_preset("plain")
CUSTOM = Template("Q[{task}]: {query}", "D[{title}]: {text}", "-")
PM = PromptMap(task_types={"STS": "sentence similarity"}, retrieval={"SciFact": "fact checking"},
               symmetric_retrieval=["QuoraRetrieval"])
TASK, QUERY, TITLE, TEXT = "fact checking", "what is x", "X", "x is y"
# (template, query side, titled document, untitled document, titled symmetric document)
EXPECTED = [
    (GECKO, "task: fact checking | query: what is x", "title: X | text: x is y", "title: none | text: x is y",
     "task: fact checking | query: X x is y"),
    (PLAIN, "fact checking what is x", "X x is y", "x is y", "fact checking X x is y"),
    (CUSTOM, "Q[fact checking]: what is x", "D[X]: x is y", "D[-]: x is y", "Q[fact checking]: X x is y"),
]


def _record(symmetric: bool, title: str | None) -> Record:
    return Record("r", "s", TASK, QUERY, Passage(TEXT, title), Passage(TEXT, None), symmetric)


def _beir(name: str) -> BeirSet:
    return BeirSet(name, {"d1": (TITLE, TEXT), "d2": ("", TEXT)}, {"q1": QUERY}, {"q1": {"d1": 1}})


@pytest.mark.parametrize("template, query, titled, untitled, symmetric", EXPECTED, ids=["gecko", "plain", "custom"])
def test_training_and_evaluation_format_a_record_alike(template, query, titled, untitled, symmetric):
    train = format_record(_record(False, TITLE), template)
    q_eval, d_eval = runner.beir_texts(_beir("scifact"), template, PM)  # scifact -> "fact checking"
    assert train.query == q_eval[0] == query
    assert (train.positive, train.negative) == (titled, untitled) == tuple(d_eval)


@pytest.mark.parametrize("template, query, titled, untitled, symmetric", EXPECTED, ids=["gecko", "plain", "custom"])
def test_symmetric_sets_join_the_title_on_both_sides(template, query, titled, untitled, symmetric):
    """Training's symmetric records and evaluation's symmetric sets (duplicate questions) give one string."""
    train = format_record(_record(True, TITLE), template)
    pm = PromptMap(task_types={}, retrieval={"QuoraRetrieval": TASK}, symmetric_retrieval=["QuoraRetrieval"])
    q_eval, d_eval = runner.beir_texts(_beir("QuoraRetrieval"), template, pm)
    assert train.query == q_eval[0] == query
    assert train.positive == d_eval[0] == symmetric
    assert train.negative == d_eval[1] == template.format_query(TASK, TEXT)  # no title: the text alone


def test_sts_and_classification_inputs_equal_a_symmetric_training_record():
    fmt = runner._formatter(resolve_format(PLAIN), "sentence similarity", "STSBenchmark", "STS")
    record = Record("r", "s", "sentence similarity", "a man plays", Passage("a person plays", None), None, True)
    train = format_record(record, PLAIN)
    assert (fmt("a man plays"), fmt("a person plays")) == (train.query, train.positive) == ("sentence similarity a man plays",
                                                                                          "sentence similarity a person plays")


def test_mteb_wrapper_formats_like_training():
    from types import SimpleNamespace

    from gecko_lightning.evaluation.mteb_eval import _make_wrapper_class

    encoder = SimpleNamespace(dim=8, max_length=32, text_format=PLAIN)
    wrapper = _make_wrapper_class()(encoder, "gecko/test", "model", PM)
    meta = SimpleNamespace(name="SciFact", type="Retrieval")
    docs = wrapper._format({"text": [f"{TITLE} {TEXT}"], "title": [TITLE], "body": [TEXT]}, meta, "document")
    assert wrapper._format({"text": [QUERY]}, meta, "query") == [format_record(_record(False, TITLE), PLAIN).query]
    assert docs == [format_record(_record(False, TITLE), PLAIN).positive]
    quora = SimpleNamespace(name="QuoraRetrieval", type="Retrieval")
    sym = wrapper._format({"text": [f"{TITLE} {TEXT}"], "title": [TITLE], "body": [TEXT]}, quora, "document")
    assert sym == [PLAIN.format_symmetric(PM.retrieval_default, TITLE, TEXT)]


@pytest.mark.parametrize("template", [GECKO, PLAIN], ids=["gecko", "plain"])
def test_export_prompts_are_exact_prefixes_of_the_training_text(template):
    prompts = sentence_transformers_prompts(template, PM)
    assert prompts[TASK] + QUERY == format_record(_record(False, TITLE), template).query
    assert prompts["document"] + TEXT == format_record(_record(False, None), template).positive
    assert prompts["query"] + QUERY == template.format_query(PM.retrieval_default, QUERY)


def test_a_template_with_text_after_the_query_gives_no_prefix():
    suffixed = Template("{query} (task: {task})", "{text}", "")
    assert suffixed.query_prefix(TASK) is None and suffixed.document_prefix() == ""
    assert set(sentence_transformers_prompts(suffixed, PM)) == {"document"}


def test_round_trip_resolution_and_names():
    assert Template.from_dict(CUSTOM.to_dict()) == CUSTOM
    with pytest.raises(ValueError, match=r"needs `query` and `document` templates.*got keys \['query'\]"):
        Template.from_dict({"query": "{query}"})
    declared = DeclaredPrompts({"query": "query: "})
    # "model": the recorded format, else the declared prompts, else raw text; never gecko unless asked for
    assert resolve_format("model", PLAIN, declared).template is PLAIN
    assert resolve_format("model", None, declared) == resolve_format("model", None, declared) != resolve_format("model")
    assert [resolve_format("model", None, declared).name, resolve_format("model").name] == ["sentence-transformers", "none"]
    assert resolve_format("gecko", PLAIN, declared).template == GECKO
    assert resolve_format("none", PLAIN, declared).template is None and resolve_format("none", PLAIN, declared).declared is None
    with pytest.raises(ValueError, match="prompts='plain': choose one of model, gecko, none"):
        resolve_format("plain")
    assert [template_name(t) for t in (GECKO, PLAIN, CUSTOM, None)] == ["gecko", "plain", "custom", "none"]


def test_a_query_written_for_its_own_task_is_scored_with_it(tmp_path):
    """A FRet test split's queries carry the task they were written (or logged) for in `metadata.task`:
    evaluation gives each the string training gave it, and the prompt map's task to the rest."""
    import json

    from gecko_lightning.evaluation.loaders import load_beir

    (tmp_path / "qrels").mkdir()
    own = "Given a scientific claim, find the abstract that supports or refutes it"
    rows = [{"_id": "q1", "text": QUERY, "metadata": {"task": own, "task_type": "given"}},
            {"_id": "q2", "text": "why is y", "metadata": {"seed_id": "d1"}},  # no task: the dataset's
            {"_id": "q3", "text": "not judged", "metadata": {"task": "other"}}]  # no qrels: not loaded
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": TITLE, "text": TEXT}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t1\n")
    data = load_beir(tmp_path)
    assert data.tasks == {"q1": own}
    pm = PromptMap(task_types={}, retrieval={tmp_path.name: "fact checking"})
    q_eval, _ = runner.beir_texts(data, GECKO, pm)
    train = format_record(Record("r", "s", own, QUERY, Passage(TEXT, TITLE), None, False), GECKO)
    assert q_eval == [train.query, "task: fact checking | query: why is y"]
    assert q_eval[0] == f"task: {own} | query: {QUERY}"
    assert runner.beir_texts(data, PLAIN, pm)[0][1] == "fact checking why is y"
    assert runner.beir_texts(data, resolve_format("none"), pm)[0] == [QUERY, "why is y"]  # raw text: no task at all


def test_a_prompt_map_file_may_name_only_what_it_changes(tmp_path):
    """`--prompt-map` with one retrieval entry: the task types and defaults stay the built-in ones."""
    from gecko_lightning.text_format import RETRIEVAL_TASK, TASK_TYPES

    path = tmp_path / "map.yaml"
    path.write_text("retrieval:\n  SciFact: Given a scientific claim, find the abstract that supports or refutes it\n")
    pm = PromptMap.load(path)
    assert pm.retrieval_task("scifact") == "Given a scientific claim, find the abstract that supports or refutes it"
    assert pm.task_types == TASK_TYPES and pm.retrieval_task("nfcorpus") == RETRIEVAL_TASK
    path.write_text("- just a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        PromptMap.load(path)
