"""Write a tiny random Llama whose tokenizer adds BOS (like Llama 3, Mistral, Gemma), as a folder.

    python scripts/make_tiny_bos_llm.py OUT_DIR [--seed 0]

The tokenizer is a byte-level BPE trained on the shipped tiny corpus; its post-processor puts `<s>`
before every text encoded with special tokens, and its chat template writes `<s>` itself, the two
ways BOS reaches a prompt. The model is 2 layers, 128 wide, head size 64 (a size vLLM's CPU
attention supports), with weights drawn from `--seed` and saved as safetensors (about 2 MB). Tests
use it to check that every backend reads the query's tokens at the same positions, BOS or not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "configs" / "assets" / "tiny_corpus" / "corpus.jsonl"
SPECIAL = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _lines() -> list[str]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    prompt_words = ["Passage: Task: Query: task: query: Answer: yes no Yes No relevant The sky is blue"] * 20
    return [f"{r.get('title') or ''} {r['text']}" for r in rows] + prompt_words


def make(out: Path, seed: int = 0) -> Path:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_lines(), trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=2048,
        pad_token_id=tok.token_to_id("<pad>"), bos_token_id=bos, eos_token_id=tok.token_to_id("</s>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a spread of logits, so greedy decoding and rankings are not all ties
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make(args.out, args.seed))
