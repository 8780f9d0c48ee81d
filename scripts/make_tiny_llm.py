"""Regenerate `configs/data/tiny-llm/`: a byte-level BPE tokenizer trained on the shipped tiny corpus
plus a 2-layer, 64-wide Llama config. No weights are shipped: `llm.random_init: true` builds them from
a fixed seed, so tests and `configs/data/fret_tiny.yaml` exercise the real transformers backend
(left-padded batched generation and scoring) offline and in seconds.

    python scripts/make_tiny_llm.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "configs" / "data" / "tiny-llm"
CORPUS = ROOT / "configs" / "assets" / "tiny_corpus" / "corpus.jsonl"
SPECIAL = ["<pad>", "<s>", "</s>"]


def _lines() -> list[str]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    prompt_words = ["Passage: Task: Query: task: query: Answer: yes no Yes No relevant"] * 20
    return [f"{r.get('title') or ''} {r['text']}" for r in rows] + prompt_words


def main() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_lines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)
    LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tok.token_to_id("<pad>"), bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"),
        tie_word_embeddings=True,
    ).save_pretrained(OUT)
    print(f"wrote {OUT} (vocab {tok.get_vocab_size()})")


if __name__ == "__main__":
    main()
