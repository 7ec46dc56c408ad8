"""Training hooks that record label dancing; each framework is imported only when used.

- :func:`auditor.hooks.torch.record_predictions`: a plain PyTorch loop.
- :func:`auditor.hooks.lightning.LabelDancingCallback`: PyTorch Lightning.
- :func:`auditor.hooks.keras.LabelDancingCallback`: Keras 3 (any backend).
"""
