"""Formatting templates and the collate: text format, shapes, padding, negatives, pos_ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from gecko_lightning.data.formatting import Example, Template, TripletCollator, format_record, stable_id
from gecko_lightning.data.schema import Passage, Record

TOKENIZER = str(Path(__file__).resolve().parents[1] / "configs" / "assets" / "tiny-bert")


def record(**kw) -> Record:
    base = dict(id="r1", source="s", task="find it", query="what is x", positive=Passage("x is y", "X"))
    return Record(**{**base, **kw})


def test_gecko_format_query_and_document_sides():
    ex = format_record(record(negative=Passage("z is w")), Template.from_preset("gecko"))
    assert ex.query == "task: find it | query: what is x"
    assert ex.positive == "title: X | text: x is y"
    assert ex.negative == "title: none | text: z is w"  # absent title becomes "none"


def test_symmetric_records_use_query_format_on_both_sides():
    ex = format_record(record(symmetric=True, negative=Passage("b")), Template.from_preset("gecko"))
    assert ex.positive == "task: find it | query: X x is y"  # the title is joined, not dropped (text_format)
    assert ex.negative == "task: find it | query: b"
    forced = format_record(record(symmetric=True), Template.from_preset("gecko"), symmetric=False)
    assert forced.positive == "title: X | text: x is y"


def test_plain_preset_is_concatenation_and_overrides_apply():
    ex = format_record(record(positive=Passage("x is y")), Template.from_preset("plain"))
    assert (ex.query, ex.positive) == ("find it what is x", "x is y")
    custom = Template.from_preset("gecko", query="Q: {query}")
    assert format_record(record(), custom).query == "Q: what is x"


def test_bad_template_and_preset_name_the_value():
    with pytest.raises(ValueError, match=r"query template 'no field' must contain \{query\}"):
        Template.from_preset("gecko", query="no field")
    with pytest.raises(ValueError, match="unknown format preset 'fancy'"):
        Template.from_preset("fancy")


def test_unique_id_is_appended_to_all_three_sides():
    ex = format_record(record(negative=Passage("n")), Template.from_preset("plain"), unique_id="17")
    assert ex.query.endswith(" 17") and ex.positive.endswith(" 17") and ex.negative.endswith(" 17")


def _examples() -> list[Example]:
    return [
        Example("a", "short q", "a long positive passage " * 20, "neg one", "g1"),
        Example("b", "a much longer query " * 10, "pos b", None, "g2", same_tower=False),
        Example("c", "q c", "pos c", "neg three words", "g1"),
    ]


def test_collate_matches_per_side_tokenizer_calls_with_dynamic_padding():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    batch = TripletCollator(tok, query_max_length=12, doc_max_length=20)(_examples())
    queries = [tok(e.query, truncation=True, max_length=12)["input_ids"] for e in _examples()]
    assert batch["query"]["input_ids"].shape == (3, max(map(len, queries)))  # longest row, capped at 12
    assert batch["query"]["input_ids"].shape[1] == 12
    for row, ids in enumerate(queries):  # each row equals the unpadded encoding, then padding
        got = batch["query"]["input_ids"][row]
        assert got[: len(ids)].tolist() == ids
        assert batch["query"]["attention_mask"][row].sum().item() == len(ids)
    pos_lens = [len(tok(e.positive, truncation=True, max_length=20)["input_ids"]) for e in _examples()]
    assert batch["positive"]["input_ids"].shape == (3, max(pos_lens))
    assert batch["positive"]["input_ids"].dtype == torch.long


def test_collate_fills_missing_negative_with_next_rows_positive():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    batch = TripletCollator(tok, 16, 16)(_examples())
    assert batch["neg_filled"] == 1
    filled = tok("pos c", truncation=True, max_length=16)["input_ids"]  # row 1 borrows row 2's positive
    assert batch["negative"]["input_ids"][1][: len(filled)].tolist() == filled
    assert batch["same_tower"].tolist() == [True, False, True]
    assert batch["ids"] == ["a", "b", "c"]


def test_collate_omits_negative_when_no_row_has_one_and_groups_share_pos_ids():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    rows = [Example(str(i), "q", "p", None, g) for i, g in enumerate(["x", "y", "x"])]
    batch = TripletCollator(tok)(rows)
    assert "negative" not in batch and "neg_filled" not in batch
    assert batch["pos_ids"].tolist() == [stable_id("x"), stable_id("y"), stable_id("x")]
    assert batch["pos_ids"][0] == batch["pos_ids"][2] != batch["pos_ids"][1]


def test_stable_id_is_fixed_across_processes():
    # blake2b of the key, not Python's salted hash(): the same on every rank and run
    import hashlib

    expected = int.from_bytes(hashlib.blake2b(b"abc", digest_size=8).digest(), "little") >> 1
    assert stable_id("abc") == expected and 0 <= expected < 2**63


@pytest.mark.parametrize("multiple", [None, 8])
def test_collate_equals_the_transformers_tokenizer_call(multiple):
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    docs = [e.positive for e in _examples()] + ["title: t | text: " + "word " * 300]
    rows = [Example(str(i), "q", d, None, str(i)) for i, d in enumerate(docs)]
    got = TripletCollator(tok, 16, 40, pad_to_multiple_of=multiple)(rows)["positive"]
    ref = tok(docs, max_length=40, truncation=True, padding="longest", pad_to_multiple_of=multiple, return_tensors="pt")
    assert torch.equal(got["input_ids"], ref["input_ids"])
    assert torch.equal(got["attention_mask"], ref["attention_mask"])


def test_filled_negative_skips_rows_of_the_same_group():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    rows = [Example("a", "q", "same text", None, "g"), Example("b", "q", "same text", "n", "g"),
            Example("c", "q", "other text", "n", "h")]
    batch = TripletCollator(tok, 16, 16)(rows)
    other = tok("other text")["input_ids"]  # row a skips row b (its duplicate) and borrows row c
    assert batch["negative"]["input_ids"][0][: len(other)].tolist() == other
