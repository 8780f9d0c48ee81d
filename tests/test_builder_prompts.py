"""Prompt files, the generation parser (tiny-LLM copy rejection) and the call cache's key."""

from __future__ import annotations

import pytest

from data_builders.llm.cache import CallCounter, LLMCache, cache_key, cached_batch
from data_builders.prompts import PROMPT_DIR, GenerationPrompt, load_prompt

TARGET = "The Eiffel Tower was finished in 1889 for the World's Fair in Paris."


@pytest.fixture(params=["generate-v1", "generate-v2", "generate-v3"])
def gp(request) -> GenerationPrompt:
    return GenerationPrompt(load_prompt(request.param), shots=3)


def test_generation_prompts_carry_at_least_eight_task_types(gp):
    assert len(gp.task_types) >= 8
    assert {e["task_type"] for e in gp.examples} == set(gp.task_types)


def test_shots_rotate_per_seed_and_repeat_for_the_same_seed(gp):
    shown = [{e["query"] for e in gp.examples if e["query"] in gp.request(f"s{i}", TARGET, 0)[0].prompt} for i in range(40)]
    assert all(len(s) == 3 for s in shown)
    assert len(set().union(*shown)) == len(gp.examples)  # every example gets used, none dominates
    assert gp.request("s1", TARGET, 0) == gp.request("s1", TARGET, 0)


def test_parse_accepts_a_good_answer(gp):
    task, query, failure = gp.parse("task:", " Given a question, find the answer\nquery: when was the eiffel tower built",
                                    "question answering", TARGET)
    assert (task, query, failure) == ("Given a question, find the answer", "when was the eiffel tower built", None)


@pytest.mark.parametrize("output", [
    " Given a question, retrieve a passage\nquery: When was the Hoover Dam finished?",  # an example's own query
    " Given a question, retrieve a passage\nquery: What is the way to factory reset your router?",  # paraphrased echo
    " Given a summary\nquery: The town's textile mills closed in 1982, and half of its residents left",  # example passage
])
def test_parse_rejects_copies_of_few_shot_examples(gp, output):
    assert gp.parse("task:", output, "question answering", TARGET)[2] == "copied_example"


@pytest.mark.parametrize("output", ["", "}}}{{", "I cannot help with that.", " Given a claim, retrieve a passage"])
def test_parse_never_crashes_on_garbage(gp, output):
    assert gp.parse("task:", output, "fact checking", TARGET) == (None, None, "no_query")


def test_missing_task_line_falls_back_to_the_task_type_description(gp):
    task, query, _ = gp.parse("", "query: eiffel tower 1889", "keyword search", TARGET)
    assert (task, query) == (gp.task_types["keyword search"], "eiffel tower 1889")


def test_every_shipped_prompt_loads_with_a_version():
    for path in PROMPT_DIR.glob("*.yaml"):
        p = load_prompt(path.stem)
        assert p.version.startswith(p.spec["version"] + "@")


def test_unknown_prompt_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match=r"prompt 'generate-v9' not found.*shipped prompts: \["):
        load_prompt("generate-v9")


def test_cache_key_changes_with_model_prompt_and_input():
    base = cache_key("m", "p@1", "ql", ["ctx", " q"])
    assert base == cache_key("m", "p@1", "ql", ["ctx", " q"])
    assert len({base, cache_key("m2", "p@1", "ql", ["ctx", " q"]), cache_key("m", "p@2", "ql", ["ctx", " q"]),
                cache_key("m", "p@1", "ql", ["ctx", " q2"])}) == 4


def test_cached_batch_computes_only_misses(tmp_path):
    cache, counter, seen = LLMCache(tmp_path / "c.sqlite"), CallCounter(), []

    def compute(idx):
        seen.append(idx)
        return [i * 10 for i in idx]

    assert cached_batch(cache, counter, "rerank", ["a", "b"], compute) == [0, 10]
    assert cached_batch(cache, counter, "rerank", ["a", "b", "c"], compute) == [0, 10, 20]
    assert seen == [[0, 1], [2]]
    assert (counter.llm_calls["rerank"], counter.cache_hits["rerank"]) == (3, 2)
    cache.close()
    assert LLMCache(tmp_path / "c.sqlite").get_many(["a", "c"]) == {"a": 0, "c": 20}  # persisted


def test_zero_shot_prompt_describes_the_task_and_cuts_lead_ins():
    gp = GenerationPrompt(load_prompt("generate-zs-v1"), shots=0, task_types=["fact checking"])
    req, task_type = gp.request("doc-1", TARGET, seed=0)
    assert task_type == "fact checking"
    assert "Given a claim, retrieve a passage that supports or refutes the claim" in req.prompt
    assert "one short claim" in req.prompt and req.prompt.startswith("Passage: " + TARGET)
    task, query, failure = gp.parse(req.prefix, ' "The passage supports the claim that the tower opened in 1889."', task_type, TARGET)
    assert failure is None and query == "the tower opened in 1889."
    assert task == "Given a claim, retrieve a passage that supports or refutes the claim"
    _, _, failure = gp.parse(req.prefix, " what is the answer to the question what is the answer to it", task_type, TARGET)
    assert failure == "repetitive"


def test_unknown_task_type_restriction_is_named():
    with pytest.raises(ValueError, match=r"generate.task_types \['poetry'\] are not in prompt 'generate-zs-v1'"):
        GenerationPrompt(load_prompt("generate-zs-v1"), shots=0, task_types=["poetry"])
