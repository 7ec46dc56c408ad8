"""Train the bundled demo: a small MLP on scikit-learn's 8x8 digits, exported to ONNX.

Deliberately not perfect (a narrow MLP, few epochs, a learning rate that keeps it
moving), so the audit has confusions and interfering pairs worth showing. Records label
dancing on a probe set with the PyTorch hook and exports one ONNX checkpoint per epoch.

Writes (deterministic, seeded):
  auditor/demo/digits.onnx          the final model (logits output)
  auditor/demo/digits_test.npz      the held-out split (x [N,1,8,8] float32, y, class_names)
  auditor/demo/digits_train.npz     the training split (for --gradient-data)
  auditor/demo/digits_dance.jsonl   the label-dancing log of the run
  examples/digits/checkpoints/epoch_NN.onnx   (not shipped; for `auditor dance --checkpoints`)

Run from the repository root: python examples/digits/train.py
Needs: pip install -e '.[torch,test]' (torch==2.13.0 CPU and scikit-learn).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "auditor" / "demo"
CLASS_NAMES = [f"digit {i}" for i in range(10)]


def main() -> None:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from auditor.dancing import LabelDancingRecorder, probe_set
    from auditor.hooks.torch import record_predictions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "examples" / "digits" / "checkpoints")
    args = parser.parse_args()

    torch.manual_seed(0)
    np.random.seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)

    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)

    DEMO.mkdir(parents=True, exist_ok=True)
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    probe = probe_set(y_test, max_per_class=100, seed=0)
    log = DEMO / "digits_dance.jsonl"
    log.unlink(missing_ok=True)
    step = 0
    with LabelDancingRecorder(log, y_test[probe], class_names=CLASS_NAMES) as recorder:
        for epoch in range(1, args.epochs + 1):
            model.train()
            order = torch.randperm(len(xt))
            for start in range(0, len(xt), 32):
                idx = order[start:start + 32]
                optimizer.zero_grad()
                loss_fn(model(xt[idx]), yt[idx]).backward()
                optimizer.step()
                step += 1
                if step % 5 == 0:  # record often: dancing happens between epochs too
                    record_predictions(recorder, model, x_test[probe], step=step, epoch=epoch)
            export(model, args.checkpoints / f"epoch_{epoch:02d}.onnx")
    export(model, DEMO / "digits.onnx")
    np.savez_compressed(DEMO / "digits_test.npz", x=x_test, y=y_test, class_names=np.array(CLASS_NAMES))
    np.savez_compressed(DEMO / "digits_train.npz", x=x_train, y=y_train, class_names=np.array(CLASS_NAMES))
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"test accuracy {acc:.3f}; wrote {DEMO}")


def export(model: object, path: Path) -> None:
    import torch

    model.eval()  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 8, 8), str(path), input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
                          opset_version=17, dynamo=False)


if __name__ == "__main__":
    main()
