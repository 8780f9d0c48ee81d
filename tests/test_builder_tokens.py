"""Prompts as token ids (data_builders/llm/tokens.py): BOS once, the query at known positions, stop strings."""

from __future__ import annotations

import pytest

from data_builders.llm import BackendError, GenRequest
from data_builders.llm.tokens import PromptTokens, cut_at_stop


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    from scripts.make_tiny_bos_llm import make

    return AutoTokenizer.from_pretrained(make(tmp_path_factory.mktemp("tinybos")))


def test_scoring_row_puts_the_query_after_one_bos(tok):
    row = PromptTokens(tok).scoring_row("Passage: the sky\nQuery:", " is blue", "\nAnswer:")
    assert row.ids[0] == tok.bos_token_id and row.ids.count(tok.bos_token_id) == 1
    assert tok.decode(row.ids[row.start : row.start + row.length]) == " is blue"
    assert tok.decode(row.ids[row.start + row.length :]) == "\nAnswer:"


def test_chat_render_has_one_bos_and_the_prefix(tok):
    p = PromptTokens(tok, chat_template=True)
    ids = p.generation_ids(GenRequest("Write a query.", "query:"))
    assert ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids) == "<s><|user|>\nWrite a query.\n<|assistant|>\nquery:"
    plain = PromptTokens(tok, chat_template=False).generation_ids(GenRequest("Write a query.", "query:"))
    assert tok.decode(plain) == "<s>Write a query.query:"


def test_fingerprint_changes_with_the_template_switch(tok):
    assert PromptTokens(tok, True).fingerprint() != PromptTokens(tok, False).fingerprint()
    assert PromptTokens(tok, True).fingerprint() == PromptTokens(tok, True).fingerprint()


def test_empty_query_and_empty_label_are_errors(tok):
    with pytest.raises(BackendError, match="empty continuation"):
        PromptTokens(tok).scoring_row("ctx", "")
    with pytest.raises(BackendError, match="encodes to no token"):
        PromptTokens(tok).label_ids([""])


@pytest.mark.parametrize("text,stop,want", [
    ("a\nb", ["\n"], "a"),
    ("a\n\nb\nc", ["\n\n"], "a"),
    ("abc", ["x"], "abc"),
    ("a.b\nc", ["\n", "."], "a"),
    ("abc", [], "abc"),
])
def test_cut_at_stop_is_what_a_server_returns(text, stop, want):
    assert cut_at_stop(text, stop) == want
