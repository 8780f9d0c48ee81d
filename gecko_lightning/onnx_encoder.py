"""Embed with an exported folder's ONNX graph under ONNX Runtime: no torch at encode time.

The folder says how: its tokenizer and `max_seq_length` (sentence_bert_config.json), the pooling
(`1_Pooling/config.json`), a projection (`2_Dense`, identity activation) and whether a Normalize module
follows (modules.json): the files `SentenceTransformer(folder)` reads, so the two agree by construction
of the folder, not of this code. Named prompts come from config_sentence_transformers.json. Sibling:
`GeckoEncoder.encode` (torch); `onnx_export` writes the graphs this reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gecko_lightning.encoder import _declared_pooling_mode
from gecko_lightning.errors import MissingPathError, UserError


def _modules(folder: Path) -> dict[str, str]:
    """{module class name: its subfolder} from modules.json."""
    path = folder / "modules.json"
    if not path.is_file():
        raise MissingPathError(f"{folder}: no modules.json; pass a folder written by `gecko export`")
    return {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in json.loads(path.read_text())}


def _dense(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The projection's (out, in) weight and bias, from a sentence-transformers Dense folder."""
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "config.json").read_text())
    if not cfg.get("activation_function", "").endswith("Identity"):
        raise UserError(f"{folder}: activation {cfg.get('activation_function')} is not supported; only a linear projection is")
    weights = load_file(str(folder / "model.safetensors"))
    return weights["linear.weight"], weights.get("linear.bias")


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """(B, T, H) token states -> (B, H), as `encoder.pool` does in torch."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "lasttoken":  # the last position the mask marks, whichever side is padded
        last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
        return hidden[np.arange(len(hidden)), last]
    m = mask[:, :, None].astype(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


class OnnxEncoder:
    """`OnnxEncoder(folder, "onnx/model_qint8_avx512_vnni.onnx").encode(texts)` -> (N, dim) float32."""

    def __init__(self, folder: str | Path, file: str = "onnx/model.onnx", threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        modules = _modules(self.folder)
        if "Pooling" not in modules:
            raise UserError(f"{self.folder / 'modules.json'}: no Pooling module; the graph's token states need one")
        pooling_cfg = self.folder / modules["Pooling"] / "config.json"
        self.pooling = _declared_pooling_mode(pooling_cfg)
        if json.loads(pooling_cfg.read_text()).get("include_prompt", True) is False:
            raise UserError(f"{pooling_cfg}: include_prompt false is not supported; gecko pools over the prompt tokens")
        self.dense = _dense(self.folder / modules["Dense"]) if "Dense" in modules else None
        self.normalize = "Normalize" in modules
        st = json.loads((self.folder / "sentence_bert_config.json").read_text()) if (self.folder / "sentence_bert_config.json").is_file() else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.max_length = st.get("max_seq_length") or self.tokenizer.model_max_length
        cfg = self.folder / "config_sentence_transformers.json"
        self.prompts = json.loads(cfg.read_text()).get("prompts", {}) if cfg.is_file() else {}
        self.session = _session(ort, self.folder / file, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: Sequence[str], batch_size: int = 32, prompt_name: str | None = None) -> np.ndarray:
        """(N, dim) float32 in the order given; batches of similar length, as sentence-transformers sorts them."""
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise UserError(f"prompt_name {prompt_name!r} is not in {self.folder}'s prompts: {', '.join(self.prompts)}")
            texts = [self.prompts[prompt_name] + t for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32) if len(texts) else np.zeros((0, 0), np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._embed([texts[i] for i in idx])
        return out

    @property
    def dim(self) -> int:
        if self.dense is not None:
            return self.dense[0].shape[0]
        return self.session.get_outputs()[0].shape[-1]

    def _embed(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feed = {name: enc[name].astype(np.int64) for name in self.inputs}
        hidden = self.session.run(None, feed)[0]  # (B, T, H)
        vec = pool(hidden, enc["attention_mask"], self.pooling)
        if self.dense is not None:
            weight, bias = self.dense
            vec = vec @ weight.T + (bias if bias is not None else 0.0)  # (B, dim)
        if self.normalize:
            vec = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        return vec.astype(np.float32)


def _session(ort, path: Path, threads: int | None):
    """An ONNX Runtime CPU session; a missing or damaged file is the user's to fix, in one line."""
    if not path.is_file():
        raise MissingPathError(f"{path}: no such ONNX file; export with `gecko export ... --onnx`")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own types (InvalidProtobuf, InvalidGraph, Fail)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: ONNX Runtime cannot load it ({first}); export it again") from None
