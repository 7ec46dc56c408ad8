"""What to tell a user whose model keeps a node no rewrite decomposes.

Fused attention kernels (and ONNX Runtime's other contrib ops) have no gradient formula and
no standard-op equivalent the auditor writes out; the fix is on the user's side: save the
model before ONNX Runtime fuses them. Each message is the tail of one line naming the node.
"""

from __future__ import annotations

import onnx

__all__ = ["unsupported_advice"]

_ATTENTION = {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention",
              "PackedMultiHeadAttention", "DecoderAttention", "DecoderMaskedMultiHeadAttention",
              "DecoderMaskedSelfAttention", "LongformerAttention", "SparseAttention", "PagedAttention",
              "QAttention", "QOrderedAttention", "RotaryEmbedding", "GemmaRotaryEmbedding", "MRotaryEmbedding"}
_NO_FUSION = ("audit the model as exported, before ONNX Runtime's transformer optimizer, or optimise it "
              "again without attention fusion: options = FusionOptions(model_type); "
              "options.enable_attention = False; optimize_model(path, model_type, "
              "optimization_options=options) (optimum: export without --optimize); the auditor "
              "decomposes the other fused ops itself")


def unsupported_advice(node: onnx.NodeProto) -> str | None:
    """The advice for a node no rewrite handles, or None when the generic message fits."""
    if node.domain == "com.microsoft" and node.op_type in _ATTENTION:
        return f"is ONNX Runtime's fused attention, which has no gradient; {_NO_FUSION}"
    if node.domain == "com.microsoft":
        return ("is an ONNX Runtime contrib op without a gradient or a standard-op equivalent the auditor "
                f"knows; {_NO_FUSION}")
    if node.domain.startswith("com.microsoft."):
        return ("is a layout-specific op ONNX Runtime writes only when a model is saved at its highest "
                "optimisation level (ORT_ENABLE_ALL, optimize_model opt_level=99); save the model at "
                "ORT_ENABLE_EXTENDED (opt_level=2) or below")
    return None
