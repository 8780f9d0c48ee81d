"""fastembed, a real ONNX consumer, reads an exported folder: same vectors as `SentenceTransformer(folder).encode`?

Runs in a virtualenv of its own: fastembed 0.9 pins huggingface-hub < 2, transformers 5 needs >= 2.4.

    python3 -m venv .venv-fastembed && .venv-fastembed/bin/pip install fastembed==0.9.1
    .venv-fastembed/bin/python benchmarks/onnx_fastembed.py outputs/onnx-bench/tuned [onnx/model_qint8_avx512_vnni.onnx]

It reads `<folder>-consumer/texts.json` and `reference.npy`, which `benchmarks/onnx_serving.py parity`
writes. Pooling and normalisation come from the folder's modules.json and 1_Pooling/config.json, read
here with json alone: nothing of gecko_lightning is installed beside fastembed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType

POOLING = {"mean": PoolingType.MEAN, "cls": PoolingType.CLS, "lasttoken": PoolingType.LAST_TOKEN}


def declared(folder: Path) -> tuple[PoolingType, bool]:
    modules = {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in json.loads((folder / "modules.json").read_text())}
    if "Dense" in modules:
        sys.exit(f"{folder}: a 2_Dense projection; fastembed has no step for it")
    cfg = json.loads((folder / modules["Pooling"] / "config.json").read_text())
    return POOLING[cfg["pooling_mode"]], "Normalize" in modules


def main() -> None:
    folder, file = Path(sys.argv[1]).resolve(), sys.argv[2] if len(sys.argv) > 2 else "onnx/model.onnx"
    consumer = folder.with_name(folder.name + "-consumer")
    texts, ref = json.loads((consumer / "texts.json").read_text()), np.load(consumer / "reference.npy")
    pooling, normalize = declared(folder)
    name = f"local/{folder.name}-{Path(file).stem}"  # a name fastembed does not know; the files come from the folder
    TextEmbedding.add_custom_model(model=name, pooling=pooling, normalization=normalize, sources=ModelSource(hf=name),
                                   dim=ref.shape[1], model_file=file)
    model = TextEmbedding(name, specific_model_path=str(folder), threads=2)
    start = time.perf_counter()
    vecs = np.stack(list(model.embed(texts, batch_size=32)))
    seconds = time.perf_counter() - start
    cos = (vecs * ref).sum(1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(ref, axis=1))
    gap = np.abs(np.linalg.norm(vecs, axis=1) / np.linalg.norm(ref, axis=1) - 1)
    print(f"fastembed {file}: {len(texts)} texts, cosine to encode min {cos.min():.7f} mean {cos.mean():.7f}, "
          f"largest norm gap {gap.max():.1e}; {len(texts) / seconds:.1f} texts/s at batch 32")


if __name__ == "__main__":
    main()
