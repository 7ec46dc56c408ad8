"""Train the demo's candidate model: the demo MLP retrained after a data-pipeline bug.

The story `auditor compare` is built for: a retrained model that is *better* overall than
the one in production, while one class quietly lost most of its training data (here a
filter kept only 10 of the training images of digit 3). The overall accuracy rises, so a
dashboard would ship it; the comparison finds the class that regressed.

Same architecture, split and optimiser as examples/digits/train.py, another seed, and
exported with the other PyTorch exporter (dynamo), so the two files also differ the way
exports from different tools do (input name, opset, graph layout).

Writes (deterministic, seeded):
  auditor/demo/digits_candidate.onnx

Run from the repository root after examples/digits/train.py: python examples/digits/train_candidate.py
Needs: pip install -e '.[torch,test]' (torch==2.13.0 CPU, scikit-learn, onnxscript).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "auditor" / "demo" / "digits_candidate.onnx"
#: The class whose training images the simulated bug dropped, and how many it kept.
STARVED_CLASS, KEPT = 3, 10
SEED, EPOCHS = 1, 12


def main() -> None:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1], as train.py
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)

    starved = np.flatnonzero(y_train == STARVED_CLASS)
    dropped = rng.choice(starved, len(starved) - KEPT, replace=False)
    keep = np.ones(len(y_train), dtype=bool)
    keep[dropped] = False
    xt, yt = torch.from_numpy(x_train[keep]), torch.from_numpy(y_train[keep])

    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 32):
            idx = order[start:start + 32]
            optimizer.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            optimizer.step()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), dynamo=True, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("N")},),
                                    verbose=False)
    program.save(str(OUT))
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    per_class = (pred[y_test == STARVED_CLASS] == STARVED_CLASS).mean()
    print(f"test accuracy {(pred == y_test).mean():.3f} (digit {STARVED_CLASS}: {per_class:.3f}); wrote {OUT}")


if __name__ == "__main__":
    main()
