"""Regenerate `configs/assets/tiny-bert/`: a WordPiece tokenizer trained on the shipped tiny
corpus plus a 2-layer, 32-wide BERT config. Weights are never shipped: `random_init: true`
builds them from the config, so tests and `configs/tiny.yaml` need no network.

    python scripts/make_tiny_model.py
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "configs" / "assets" / "tiny-bert"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def corpus_lines() -> list[str]:
    lines = []
    for path in sorted((ROOT / "configs" / "assets").glob("*/*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            lines += [rec.get("query", ""), json.dumps(rec.get("positive", "")), rec.get("text", "")]
    # The formatting templates must tokenize to known pieces.
    return lines + ["task: query: title: text: none |"] * 10


def main() -> None:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus_lines(), trainers.WordPieceTrainer(vocab_size=2000, special_tokens=SPECIAL))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=128,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)
    BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    ).save_pretrained(OUT)
    print(f"wrote {OUT} (vocab {tok.get_vocab_size()})")


if __name__ == "__main__":
    main()
