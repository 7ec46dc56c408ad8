"""The training hooks in real (small) training loops: plain PyTorch, Lightning, Keras on torch.

CI installs torch (pinned CPU build), lightning and keras (.ci/run); where a framework is
missing the test says which and is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from auditor.dancing import LabelDancingRecorder, dance_analysis, read_log


def _separable(n: int = 60, k: int = 3, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centers = rng.standard_normal((k, d)) * 2
    return (centers[y] + rng.standard_normal((n, d)) * 0.7).astype(np.float32), y.astype(np.int64)


def test_plain_pytorch_loop(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="the PyTorch hook needs torch (pip install 'auditor[torch]')")
    from auditor.hooks.torch import record_predictions

    x, y = _separable()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = x[::3]
    log = tmp_path / "torch.jsonl"
    step = 0
    with LabelDancingRecorder(log, y[::3]) as rec:
        for epoch in range(1, 4):
            for s in range(0, len(x), 10):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[s:s + 10])),
                                                         torch.from_numpy(y[s:s + 10]))
                loss.backward()
                opt.step()
                step += 1
            model.train()
            pred = record_predictions(rec, model, probe, step=step, epoch=epoch)
            assert model.training  # the hook restores the training mode
            with torch.no_grad():
                np.testing.assert_array_equal(pred, model(torch.from_numpy(probe)).argmax(1).numpy())
    steps, preds, epochs, header = read_log(log)
    assert steps.tolist() == [6, 12, 18] and epochs.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(preds[-1], pred)
    assert dance_analysis(log).predictions.shape == (3, 20)


# Lightning and its dependencies warn about their own internals (deprecations, worker counts).
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
def test_lightning_callback(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="needs torch")
    pytest.importorskip("lightning", reason="the Lightning hook needs lightning (pip install 'auditor[lightning]')")
    import lightning

    from auditor.hooks.lightning import LabelDancingCallback

    x, y = _separable()

    class Net(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.net(t)

        def training_step(self, batch: tuple, _: int) -> torch.Tensor:
            xb, yb = batch
            return torch.nn.functional.cross_entropy(self(xb), yb)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=10)
    log = tmp_path / "lightning.jsonl"
    with LabelDancingRecorder(log, y) as rec:
        trainer = lightning.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                                    callbacks=[LabelDancingCallback(rec, x)])
        model = Net()
        trainer.fit(model, loader)
    steps, preds, epochs, _ = read_log(log)
    assert epochs.tolist() == [1, 2] and steps.tolist() == [6, 12]
    with torch.no_grad():
        np.testing.assert_array_equal(preds[-1], model(torch.from_numpy(x)).argmax(1).numpy())


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
def test_keras_callback_on_the_torch_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch", reason="Keras runs here on the torch backend")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason="the Keras hook needs keras (pip install 'auditor[keras]')")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was already imported with the {keras.backend.backend()} backend")
    from auditor.hooks.keras import LabelDancingCallback

    x, y = _separable()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log = tmp_path / "keras.jsonl"
    with LabelDancingRecorder(log, y) as rec:
        model.fit(x, y, epochs=2, batch_size=10, verbose=0, callbacks=[LabelDancingCallback(rec, x)])
    steps, preds, epochs, _ = read_log(log)
    assert epochs.tolist() == [1, 2] and steps.tolist() == [6, 12]
    np.testing.assert_array_equal(preds[-1], np.argmax(model.predict(x, verbose=0), axis=1))


def test_hooks_modules_do_not_import_frameworks() -> None:
    import subprocess
    import sys

    code = ("import sys, auditor, auditor.hooks.torch, auditor.hooks.lightning, auditor.hooks.keras; "
            "print(sorted(m for m in ('torch', 'lightning', 'keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "blocked", "match"), [
    ("auditor.hooks.keras", ("keras",), "pip install keras"),
    ("auditor.hooks.lightning", ("lightning", "lightning.pytorch", "pytorch_lightning"), "pip install .*lightning"),
])
def test_a_missing_framework_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str,
                                                  blocked: tuple[str, ...], match: str) -> None:
    import importlib
    import sys

    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    hook = importlib.import_module(module)
    with LabelDancingRecorder(tmp_path / "log.jsonl", [0, 1]) as rec, pytest.raises(ImportError, match=match):
        hook.LabelDancingCallback(rec, np.zeros((2, 3)))
