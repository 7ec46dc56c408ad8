"""A tiny text classifier written with onnx.helper, its float64 numpy twin, and a tokenizer.

The model takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` ([N, T] int64,
dynamic N and T) and computes ``z = W2 tanh(W1 pool + b1) + b2`` with ``pool`` the masked
mean of ``E[ids] + S[types]``: the gradients flow through a Gather into the embedding
tables, the way a transformer's do. The numpy functions are the independent reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot", "actor", "very", "not", "the", "a", "was"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
VOCAB = {w: i for i, w in enumerate(SPECIAL + WORDS)}
NAMES = ("input_ids", "attention_mask", "token_type_ids")


def save_tokenizer(path: Path, *, pad: bool = True, pair_template: bool = True) -> Path:
    """A WordLevel tokenizer over :data:`VOCAB` with BERT-style [CLS] ... [SEP] templates."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = dict(VOCAB) if pad else {w: i for i, w in enumerate(["[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if pair_template:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.save(str(path))
    return path


def expected_ids(text: str, pair: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids and types by hand: lower-case whitespace words, unknown words as [UNK]."""
    def words(t: str) -> list[int]:
        return [VOCAB.get(w, VOCAB["[UNK]"]) for w in t.split()]

    ids = [VOCAB["[CLS]"], *words(text), VOCAB["[SEP]"]]
    types = [0] * len(ids)
    if pair is not None:
        second = [*words(pair), VOCAB["[SEP]"]]
        ids += second
        types += [1] * len(second)
    return ids, types


def weights(k: int = 3, hidden: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v, e = len(VOCAB), 5
    return {"emb": rng.standard_normal((v, e)).astype(np.float32),
            "types": rng.standard_normal((2, e)).astype(np.float32) * 0.5,
            "w1": (rng.standard_normal((hidden, e)) / np.sqrt(e)).astype(np.float32),
            "b1": (rng.standard_normal(hidden) * 0.1).astype(np.float32),
            "w2": (rng.standard_normal((k, hidden)) / np.sqrt(hidden)).astype(np.float32),
            "b2": (rng.standard_normal(k) * 0.1).astype(np.float32)}


def save_model(path: Path, w: dict[str, np.ndarray]) -> Path:
    k = w["w2"].shape[0]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["tok"], axis=0),
        helper.make_node("Gather", ["types", "token_type_ids"], ["typ"], axis=0),
        helper.make_node("Add", ["tok", "typ"], ["h0"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axis2"], ["m3"]),
        helper.make_node("Mul", ["h0", "m3"], ["hm"]),
        helper.make_node("ReduceSum", ["hm", "axis1"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axis1"], ["n"], keepdims=0),
        helper.make_node("Div", ["s", "n"], ["pool"]),
        helper.make_node("Gemm", ["pool", "w1", "b1"], ["a1"], transB=1),
        helper.make_node("Tanh", ["a1"], ["t1"]),
        helper.make_node("Gemm", ["t1", "w2", "b2"], ["logits"], transB=1),
    ]
    inits = [numpy_helper.from_array(v, n) for n, v in w.items()]
    inits += [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
              numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", "T"]) for n in NAMES]
    g = helper.make_graph(nodes, "text", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                                                ["N", k])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def logits(w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
    f = {n: np.asarray(v, np.float64) for n, v in w.items()}
    h = f["emb"][ids] + f["types"][types]
    m = mask.astype(np.float64)[..., None]
    pool = (h * m).sum(axis=1) / m.sum(axis=1)
    return np.tanh(pool @ f["w1"].T + f["b1"]) @ f["w2"].T + f["b2"]


def class_losses(w: dict[str, np.ndarray], arrays: dict[str, np.ndarray], y: np.ndarray, k: int) -> np.ndarray:
    z = logits(w, arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"])
    m = z.max(axis=1, keepdims=True)
    loss = (m[:, 0] + np.log(np.exp(z - m).sum(axis=1))) - z[np.arange(len(y)), y]
    return np.array([loss[y == c].mean() if np.any(y == c) else np.nan for c in range(k)])
