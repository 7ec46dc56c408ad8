"""How perturbed weights reach ONNX Runtime: the measured cost of each strategy, and the
graph a rebuilt session is made from.

:class:`auditor.runtime.Evaluator` runs a step either with the weights as graph inputs
(``"inputs"``) or in a new session whose initializers are the perturbed weights
(``"rebuild"``). The rebuild shell declares every parameter as external data held in
memory, so a step hands ONNX Runtime the new arrays (``SessionOptions.add_external_initializers``)
without serialising them; they are real initializers, which ONNX Runtime pre-packs and
folds like the exported ones (``add_initializer`` overrides can be silently ignored for
Conv weights, see the runtime tests). Nothing here opens a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

from . import graph as G

if TYPE_CHECKING:
    from .model import Model

__all__ = ["StrategyCosts", "external_weights_shell"]


@dataclass(frozen=True)
class StrategyCosts:
    """What the strategy probe measured: the cost model of one evaluation on this model and device.

    An evaluation of ``n`` samples costs about ``inputs_overhead_s + n * inputs_per_sample_s``
    with the ``"inputs"`` strategy and ``rebuild_overhead_s + n * rebuild_per_sample_s`` with
    ``"rebuild"``: a line through a one-sample evaluation and one of the first batches, so a
    small evaluation pays what a step costs whatever its size (a session build, a first run).

    Attributes
    ----------
    creation_s : float
        Building one session with perturbed weights (the per-step cost of ``"rebuild"``).
    inputs_per_sample_s, rebuild_per_sample_s : float
        Seconds per sample of a pass with weights as graph inputs / as initializers. The
        inputs figure is a lower bound when the probe stopped that run early (``inputs_stopped``).
    inputs_stopped : bool
        The probe stopped the ``"inputs"`` run once it was already slower than a rebuilt step.
    inputs_overhead_s : float
        A one-sample run with weights as inputs: binding, the call, copying the outputs
        (0 when the inputs run was stopped).
    inputs_creation_s : float
        Building the weights-as-inputs session, once per number of directions.
    rebuild_overhead_s : float
        A rebuilt step of one sample (0: ``creation_s`` stands for it).
    rebuild_timed : bool
        False when a whole inputs step was cheaper than half a session build, so rebuilding
        could not win and was not timed: the rebuild figures are then lower bounds (a session
        build per step, the inputs run's speed per sample).
    """

    creation_s: float
    inputs_per_sample_s: float
    rebuild_per_sample_s: float
    inputs_stopped: bool = False
    inputs_overhead_s: float = 0.0
    inputs_creation_s: float = 0.0
    rebuild_overhead_s: float = 0.0
    rebuild_timed: bool = True

    def estimate(self, strategy: str, n_samples: int) -> float:
        """Seconds of one evaluation of ``n_samples`` samples with ``strategy``."""
        if strategy == "inputs":
            return self.inputs_overhead_s + n_samples * self.inputs_per_sample_s
        return (self.rebuild_overhead_s or self.creation_s) + n_samples * self.rebuild_per_sample_s

    def faster(self, n_samples: int) -> str:
        """The strategy with the smaller estimate for ``n_samples`` samples ("rebuild" on a tie).

        "rebuild" whenever the inputs run was stopped: its per-sample figure is then only a
        lower bound (on ResNet-18 at 64x64, 2.2x below the real cost), and comparing it would
        send every subset smaller than the audit data to the slower strategy.
        """
        if self.inputs_stopped:
            return "rebuild"
        return "inputs" if self.estimate("inputs", n_samples) < self.estimate("rebuild", n_samples) else "rebuild"


#: The external-data location named by the weights of the rebuild shell (never a real file).
_IN_MEMORY = "auditor-in-memory-weights"


def external_weights_shell(model: Model) -> bytes:
    """The evaluation graph with every parameter declared as an external-data initializer."""
    m = G.evaluation_graph(model, keep_weights=False)
    for p in model.parameters:
        t = onnx.TensorProto(name=p.name, data_type=onnx.TensorProto.FLOAT, dims=list(p.shape))  # θ* is float32
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", _IN_MEMORY), ("offset", "0"), ("length", str(4 * p.size))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        m.graph.initializer.append(t)
    return bytes(m.SerializeToString())
