"""`gecko export ... --onnx [--quantize int8]`: the backbone as ONNX, and a dynamically quantized int8 copy.

Files, at the names sentence-transformers' ONNX backend reads (`backend="onnx"`, `model_kwargs={"file_name": ...}`):
    onnx/model.onnx                       the backbone (input_ids, attention_mask[, token_type_ids] -> last_hidden_state),
                                          batch and sequence axes dynamic; exported by `torch.onnx.export(dynamo=True)`
    onnx/model_<weights>_<arch>.onnx      `--quantize int8`: the same graph, MatMul and Gather weights in 8 bits
                                          (onnxruntime.quantization.quantize_dynamic); weights `qint8`, or `quint8` on avx2
Only the backbone is in the graph: pooling, the projection (2_Dense) and normalisation stay the modules that
modules.json declares, so the folder means what it meant without ONNX. `onnx_encoder.OnnxEncoder` reads it back.

Why the dynamo exporter: the TorchScript one traces transformers 5's attention-mask construction into
constants, and its MiniLM graph is off by up to 1.56 on real tokens (docs/benchmarks.md); torch.export keeps
the mask a function of attention_mask. Opset 23 gives ONNX's own `Attention` op, which ONNX Runtime runs
fused: 1.4x faster than opset 18's MatMul/Softmax chain for MiniLM on 2 cores.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
import warnings
from pathlib import Path

import torch
from torch import nn

from gecko_lightning.errors import UserError

OPSET = 23
ONNX_DIR = "onnx"
MODEL_FILE = "model.onnx"
# sentence-transformers' `export_dynamic_quantized_onnx_model` names (optimum's AutoQuantizationConfig):
# unsigned weights on AVX2, whose u8*s8 instruction can saturate; signed elsewhere.
ARCH_WEIGHTS = {"avx512_vnni": "qint8", "avx512": "qint8", "avx2": "quint8", "arm64": "qint8"}
QUANTIZE_KINDS = ("int8",)
BACKBONE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INSTALL = "pip install 'gecko-lightning[onnx]'"
# fp32 graph against `SentenceTransformer(folder).encode`: a correct export agrees to float rounding.
FP32_MIN_COSINE = 0.99999
# int8 is lossy by design: MiniLM lands at 0.994 mean over 1,000 SciFact texts but 0.989 over these five
# short ones, so the export only refuses a broken quantization; docs/benchmarks.md has the real figures.
INT8_MIN_MEAN_COSINE = 0.95
CHECK_TEXTS = ("what causes tides?", "x", "Tides are the rise and fall of sea levels caused by the Moon and the Sun. " * 40,
               "Róisín Owens is a Professor in the Department of Chemical Engineering.", "a b c d e f g")


def require_onnx() -> None:
    """Refuse --onnx before any work when the extra is missing: one line naming the pip command."""
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--onnx needs {', '.join(missing)}, not installed here; install the onnx extra: {INSTALL}")


def machine_arch() -> str:
    """This machine's quantization target, named as sentence-transformers names them."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = _cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def _cpu_flags() -> set[str]:
    try:  # Linux; elsewhere x86 falls back to avx2, which every x86-64 CPU of the last decade runs
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def check_flags(onnx: bool, quantize: str | None, arch: str | None) -> str | None:
    """The quantization arch to write (None: no int8 file); bad combinations fail before the model loads."""
    if quantize is None:
        if arch is not None:
            raise UserError(f"--quantize-arch {arch} only applies with --quantize int8")
        return None
    if quantize not in QUANTIZE_KINDS:
        raise UserError(f"--quantize {quantize!r} is not supported; use --quantize int8")
    if not onnx:
        raise UserError("--quantize int8 quantizes onnx/model.onnx; add --onnx")
    arch = arch or machine_arch()
    if arch not in ARCH_WEIGHTS:
        raise UserError(f"--quantize-arch {arch!r} is unknown; use one of {', '.join(ARCH_WEIGHTS)} (sentence-transformers' names)")
    return arch


def quantized_file(arch: str) -> str:
    """`model_qint8_avx512_vnni.onnx`, `model_quint8_avx2.onnx`, ...: sentence-transformers' file names."""
    return f"model_{ARCH_WEIGHTS[arch]}_{arch}.onnx"


class _Backbone(nn.Module):
    """The backbone with its token states as the only output, as optimum's feature-extraction graphs have."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state  # (B, T, H)


def _graph_inputs(tokenizer) -> tuple[str, ...]:
    """input_ids, attention_mask, and token_type_ids where the tokenizer makes them (BERT yes, RoBERTa no)."""
    made = set(tokenizer.model_input_names)
    return tuple(n for n in BACKBONE_INPUTS if n in made or n != "token_type_ids")


def export_onnx(folder: Path, opset: int = OPSET) -> Path:
    """Write folder/onnx/model.onnx from the backbone saved at the folder's root; returns its path."""
    from transformers import AutoConfig, AutoTokenizer

    from gecko_lightning.encoder import backbone_class

    cls = backbone_class(AutoConfig.from_pretrained(folder))
    # transformers reports the [CLS] pooler our export leaves out as missing; the graph never reads it
    backbone = cls.from_pretrained(folder, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    names = _graph_inputs(tokenizer)
    # two texts of different lengths: a padded batch, so no axis is traced as a constant 1
    example = tokenizer(["an example text for tracing", "short"], padding=True, return_tensors="pt")
    args = tuple(example[n] for n in names)
    batch, seq = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # "axis name batch_size will not be used": it is
        warnings.simplefilter("ignore", category=FutureWarning)
        program = torch.onnx.export(_Backbone(backbone).eval(), args, input_names=list(names), output_names=["last_hidden_state"],
                                    dynamic_shapes={n: {0: batch, 1: seq} for n in names}, dynamo=True,
                                    opset_version=opset, verbose=False)
    out = folder / ONNX_DIR / MODEL_FILE
    out.parent.mkdir(exist_ok=True)
    program.save(str(out))
    return out


def quantize(model_path: Path, arch: str) -> Path:
    """Dynamic int8 quantization as sentence-transformers does it (per channel, symmetric weights); returns the file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    # The quantizer maps any op named Attention to com.microsoft's QAttention, whose attributes differ
    # from ONNX's opset-23 Attention: the session would refuse the graph. Attention stays float.
    ops = [op for op in IntegerOpsRegistry if op != "Attention"]
    weights = QuantType.QUInt8 if ARCH_WEIGHTS[arch] == "quint8" else QuantType.QInt8
    out = model_path.with_name(quantized_file(arch))
    root = logging.getLogger()
    level, _ = root.level, root.setLevel(logging.ERROR)  # its advice to pre-process is for static (calibrated) quantization
    try:
        quantize_dynamic(model_path, out, weight_type=weights, per_channel=True, op_types_to_quantize=ops,
                         extra_options={"WeightSymmetric": True})
    finally:
        root.setLevel(level)
    return out


def agreement(ours, ref) -> tuple:
    """Per-row cosine and relative norm difference of (N, dim) vectors: cosine alone would miss a lost normalisation."""
    import numpy as np

    n_ours, n_ref = np.linalg.norm(ours, axis=1), np.linalg.norm(ref, axis=1)
    cos = (ours * ref).sum(axis=1) / np.maximum(n_ours * n_ref, 1e-12)
    return cos, np.abs(n_ours / np.maximum(n_ref, 1e-12) - 1)


def check_vectors(ours, ref, what: str, min_cosine: float = FP32_MIN_COSINE, mean: bool = False) -> float:
    """The lowest (or mean) cosine of `ours` to `ref`; raises when it is below `min_cosine` or the largest (or
    mean) relative norm difference is above 1 - min_cosine."""
    cos, norm_gap = agreement(ours, ref)
    which = "mean" if mean else "lowest"
    value, gap = (float(cos.mean()), float(norm_gap.mean())) if mean else (float(cos.min()), float(norm_gap.max()))
    if value < min_cosine or gap > 1 - min_cosine:
        raise UserError(f"{what}: {which} cosine to SentenceTransformer(folder).encode is {value:.6f} "
                        f"(bar {min_cosine}), {which} norm gap {gap:.2e}: the graph or its reading does not "
                        "compute this model; export again, and report it with your torch and onnxscript versions")
    return value


def check_onnx(folder: Path, file: str, min_cosine: float = FP32_MIN_COSINE, mean: bool = False) -> float:
    """`check_vectors` of `OnnxEncoder(folder, file)` against `SentenceTransformer(folder).encode` on CHECK_TEXTS,
    in one batch (padding and truncation both exercised)."""
    from sentence_transformers import SentenceTransformer

    from gecko_lightning.onnx_encoder import OnnxEncoder

    texts = list(CHECK_TEXTS)
    ours = OnnxEncoder(folder, file).encode(texts, batch_size=len(texts))
    ref = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=len(texts))
    return check_vectors(ours, ref, file, min_cosine, mean)


def write_onnx(folder: Path, arch: str | None) -> dict[str, float]:
    """onnx/model.onnx, and the int8 file when `arch` is given, each checked against `encode`.

    Returns {file: cosine}: the lowest over the check texts for fp32, the mean for int8, whose
    per-text error is larger by design.
    """
    require_onnx()
    model = export_onnx(folder)
    rel = f"{ONNX_DIR}/{MODEL_FILE}"
    checked = {rel: check_onnx(folder, rel)}
    if arch is not None:
        qrel = f"{ONNX_DIR}/{quantize(model, arch).name}"
        checked[qrel] = check_onnx(folder, qrel, INT8_MIN_MEAN_COSINE, mean=True)
    for rel, cos in checked.items():
        which = "mean" if rel != f"{ONNX_DIR}/{MODEL_FILE}" else "lowest"
        print(f"[gecko export] {rel}: {(folder / rel).stat().st_size / 1e6:.1f} MB, {which} cosine to encode {cos:.6f} "
              f"over {len(CHECK_TEXTS)} texts")
    return checked
