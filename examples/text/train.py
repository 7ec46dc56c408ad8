"""Train the text example: a tiny BERT that routes support tickets, exported to ONNX.

The tickets come from make_data.py (six classes, three pairs made to overlap). A BPE
tokenizer is trained on the training texts with Hugging Face ``tokenizers`` and saved as
``tokenizer.json`` (BERT-style ``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]`` templates,
``[PAD]`` padding), then a one-layer BERT with hidden size 32 (``transformers`` config,
trained from scratch) learns the classes. Deliberately small and briefly trained: the
overlapping pairs leave confusions for the audit to find.

Writes (deterministic, seeded; committed, so trying the example needs no torch):
  examples/text/train.csv, test.csv   the tickets (columns text,label)
  examples/text/tokenizer.json        the tokenizer
  examples/text/text.onnx             the model: inputs input_ids, attention_mask, token_type_ids
                                      ([N, T] int64, dynamic N and T), output logits [N, 6]
  examples/text/text_reference.npz    the test set as token arrays and the PyTorch model's logits
                                      on them (checked against the ONNX model by the tests)

Run from the repository root: python examples/text/train.py (about a minute on 2 CPU cores).
Needs: pip install -e '.[torch,text]' transformers.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_data import CLASS_NAMES, make_tickets, write_csv  # noqa: E402

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
MAX_POSITIONS = 128  # the auditor's default --max-length, so any ticket it passes fits
EPOCHS = 15


def train_tokenizer(texts: list[str], path: Path) -> Any:
    """A BPE tokenizer trained on ``texts``, with BERT's normaliser, templates and padding."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # BPE, not WordPiece: tokenizers 0.23's WordPiece trainer breaks ties between equally frequent merges in
    # hash-map order, so its vocabulary changes from run to run; the BPE trainer's does not.
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    tokenizer.save(str(path))
    return tokenizer


def encode(tokenizer: Any, texts: list[str]) -> dict[str, np.ndarray]:
    """Token arrays [N, T] int64, padded to the longest text, as the auditor makes them."""
    encodings = tokenizer.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}


def build_model(vocab_size: int) -> Any:
    """A one-layer BERT classifier (hidden 32, two heads) that returns the logits tensor."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=MAX_POSITIONS, type_vocab_size=2,
                        num_labels=len(CLASS_NAMES), pad_token_id=0)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertForSequenceClassification(config)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    return Logits()


def fit(model: Any, arrays: dict[str, np.ndarray], y: np.ndarray, test: dict[str, np.ndarray],
        y_test: np.ndarray) -> None:
    """AdamW on mini-batches of 32, printing the test accuracy after each epoch."""
    import torch

    tensors = [torch.from_numpy(arrays[n]) for n in INPUTS]
    labels = torch.from_numpy(y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(1, EPOCHS + 1):
        model.train()
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), 32):
            idx = order[start:start + 32]
            optimizer.zero_grad()
            loss_fn(model(*(t[idx] for t in tensors)), labels[idx]).backward()
            optimizer.step()
        accuracy = (predict(model, test).argmax(1) == y_test).mean()
        print(f"epoch {epoch}: test accuracy {accuracy:.3f}")


def predict(model: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return model(*(torch.from_numpy(arrays[n]) for n in INPUTS)).numpy()


def export(model: Any, arrays: dict[str, np.ndarray], path: Path) -> None:
    """TorchScript export with dynamic batch and sequence axes."""
    import torch

    model.eval()
    example = tuple(torch.from_numpy(arrays[n][:2]) for n in INPUTS)
    axes: dict[str, dict[int, str]] = {n: {0: "N", 1: "T"} for n in INPUTS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), input_names=list(INPUTS), output_names=["logits"],
                          dynamic_axes={**axes, "logits": {0: "N"}}, opset_version=17, dynamo=False)


def main() -> None:
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: the same float sums, so the same weights, on every machine size
    train, test = make_tickets(seed=0)
    write_csv(HERE / "train.csv", train)
    write_csv(HERE / "test.csv", test)
    tokenizer = train_tokenizer([t for t, _ in train], HERE / "tokenizer.json")
    x_train, x_test = encode(tokenizer, [t for t, _ in train]), encode(tokenizer, [t for t, _ in test])
    y_train = np.array([CLASS_NAMES.index(label) for _, label in train], dtype=np.int64)
    y_test = np.array([CLASS_NAMES.index(label) for _, label in test], dtype=np.int64)

    model = build_model(tokenizer.get_vocab_size())
    fit(model, x_train, y_train, x_test, y_test)
    export(model, x_train, HERE / "text.onnx")
    logits = predict(model, x_test)
    np.savez_compressed(HERE / "text_reference.npz", **x_test, logits=logits, y=y_test)

    session = ort.InferenceSession(str(HERE / "text.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], x_test)[0]
    print(f"ONNX vs PyTorch logits: max |difference| {np.abs(onnx_logits - logits).max():.2e}")
    predicted = logits.argmax(1)
    print(f"test accuracy {(predicted == y_test).mean():.3f}; per class:")
    for c, name in enumerate(CLASS_NAMES):
        print(f"  {name:15s} {(predicted[y_test == c] == c).mean():.3f}")
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
