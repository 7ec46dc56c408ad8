"""The gradient pass's scheduling: the graph batch that pads least, and several workers giving
the serial pass's gradients, class by class, on a network deep enough that the gradients
flow back through every rewritten rule."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest

import auditor
from auditor import gradient_plan as P
from auditor import gradient_stream as S
from auditor.errors import AuditorError

from . import reference
from .test_reverse_rules import CASES, _deep_model


def _brute_force(counts: list[int], batch_size: int) -> tuple[int, int]:
    """(least padded work, largest b within 1% of it) over b in [ceil(top/2), top], by plain loops."""
    top = min(batch_size, max(counts))
    work = {b: sum(((n + b - 1) // b) * b for n in counts) for b in range((top + 1) // 2, top + 1)}
    least = min(work.values())
    return least, max(b for b, w in work.items() if w <= least * 1.01)


def test_graph_batch_pads_least_like_a_brute_force_search() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(1, 400, size=int(rng.integers(1, 12))).tolist()
        batch_size = int(rng.integers(1, 300))
        b = P.graph_batch(counts, batch_size)
        least, want = _brute_force(counts, batch_size)
        assert b == want, (counts, batch_size)
        assert P.padded_samples(counts, b) <= least * 1.01
    assert P.graph_batch([130] * 10, 128) == 65 and P.padded_samples([130] * 10, 65) == 1300
    assert P.graph_batch([256] * 10, 128) == 128
    assert P.graph_batch([5, 5], 128) == 5  # never more than the largest class
    assert P.graph_batch([3, 5], 128) == 3  # 3 + 6 samples, not 5 + 5
    assert P.graph_batch([50] * 9 + [51], 128) == 51  # not batches of 1, though they pad nothing


def test_stream_uses_the_graph_batch_and_counts_its_batches(tmp_path) -> None:
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    model = auditor.load_model(path)
    y = np.repeat([0, 1, 2], [13, 13, 7])
    data = auditor.Dataset(np.zeros((len(y), 2, 10, 12), np.float32), y)
    stream = S.GradientStream(model, data, batch_size=12, provider="cpu")
    assert stream.batch == 7  # 12 would run 24 + 24 + 12 samples; 7 runs 14 + 14 + 7
    assert stream.n_batches == 5


def _data(n_per_class: list[int]) -> auditor.Dataset:
    rng = np.random.default_rng(3)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    return auditor.Dataset(rng.standard_normal((len(y), 2, 10, 12)).astype(np.float32), rng.permutation(y))


def _stream_results(model: auditor.Model, data: auditor.Dataset, workers: int | None
                    ) -> tuple[list[int], np.ndarray, np.ndarray, int]:
    stream = S.GradientStream(model, data, batch_size=4, provider="cpu", workers=workers)
    ticks = []
    classes, rows = [], []
    for c, g in stream.run(lambda: ticks.append(threading.current_thread() is threading.main_thread())):
        classes.append(c)
        rows.append(g.copy())
    assert len(ticks) == stream.n_batches and all(ticks)  # one tick per batch, on the caller's thread
    return classes, np.stack(rows), stream.losses.copy(), stream.workers


def test_workers_give_the_serial_gradients_in_the_same_order(tmp_path) -> None:
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    model = auditor.load_model(path)
    data = _data([9, 14, 5])  # several batches per class, last batches padded
    classes1, flat1, losses1, w1 = _stream_results(model, data, 1)
    classes3, flat3, losses3, w3 = _stream_results(model, data, 3)
    again3 = _stream_results(model, data, 3)
    assert (w1, w3) == (1, 3)
    assert classes1 == classes3 == [0, 1, 2]
    np.testing.assert_allclose(flat3, flat1, rtol=1e-5, atol=1e-6 * np.abs(flat1).max())
    np.testing.assert_allclose(losses3, losses1, rtol=1e-6)
    np.testing.assert_array_equal(again3[1], flat3)  # the same sums in the same order, run after run
    np.testing.assert_array_equal(again3[2], losses3)
    # and against float64 finite differences, for the first layer (the whole network's adjoint behind it)
    names = list(model.parameter_names)
    w1_slice = slice(0, int(np.prod(model.parameters[0].shape)))
    assert names[0] == "w1"
    g = flat3[1, w1_slice]
    idx = np.unique([0, g.size // 2, g.size - 1, int(np.argmax(np.abs(g)))])
    fd = reference.finite_difference_gradient(onnx.load(path), data.x, data.y, 1, "w1", "z", "logits", indices=idx)
    np.testing.assert_allclose(g[idx], fd, rtol=1e-4, atol=1e-4 * np.abs(g).max())


def test_a_caller_that_stops_early_stops_the_workers(tmp_path, monkeypatch) -> None:
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    model = auditor.load_model(path)
    started = []
    run = S._Slot.run

    def counted(self: S._Slot, c: int, idx: np.ndarray) -> list[np.ndarray]:
        started.append(c)
        return run(self, c, idx)

    monkeypatch.setattr(S._Slot, "run", counted)
    stream = S.GradientStream(model, _data([16, 16, 16]), batch_size=4, provider="cpu", workers=2)
    results = stream.run()
    c, _ = next(results)
    assert c == 0 and len(started) <= 4 + 2 * 2  # class 0's four batches, at most 2 x workers ahead
    results.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("auditor-gradients")]
    assert len(started) < stream.n_batches


@pytest.mark.parametrize("workers", [0, -2, 1.5, True, "2"])
def test_bad_worker_counts_are_refused(tmp_path, workers: object) -> None:
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    with pytest.raises(AuditorError, match="gradient workers must be a whole number >= 1"):
        auditor.class_gradients(auditor.load_model(path), _data([4, 4]), provider="cpu",
                                workers=workers)  # type: ignore[arg-type]


def test_worker_counts_follow_the_device_and_the_batches(tmp_path) -> None:
    assert P.check_workers(4, "cuda") == 1  # CUDA keeps one session, one batch at a time
    assert P.check_workers(None, "cpu") == P.default_workers()
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    stream = S.GradientStream(auditor.load_model(path), _data([3, 3, 3]), batch_size=4, provider="cpu", workers=8)
    assert stream.n_batches == 3 and stream.workers == 3  # never more workers than batches


def test_default_workers_are_as_many_runs_as_fit_in_memory(tmp_path, monkeypatch) -> None:
    from onnx import TensorProto, helper

    small = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=TensorProto.DOUBLE)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [4, 5])],
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, [4, 5]),
                    helper.make_tensor_value_info("i", TensorProto.INT64, [3, 2])]))
    assert P.run_bytes(small) == 4 * 5 * 4 + 3 * 2 * 8
    assert P.largest_tensor(small) == 4 * 5 * 4
    assert P.memory_workers(small, 3 * 128 + 127) == 3
    assert P.memory_workers(small, 10) == 1  # never none
    assert P.memory_workers(small, None) >= 1 << 20  # unknown memory: no limit from it

    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    model = auditor.load_model(path)
    data = _data([9, 14, 5])
    monkeypatch.setattr(P, "default_workers", lambda: 4)
    assert S.GradientStream(model, data, batch_size=4, provider="cpu").workers == 1  # batches too small to hand off
    assert S.GradientStream(model, data, batch_size=4, provider="cpu", workers=2).workers == 2  # asked for: kept
    monkeypatch.setattr(P, "MIN_PARALLEL_BYTES", 0)
    for available, want in [(None, 4), (0, 1)]:
        monkeypatch.setattr(P, "available_memory", lambda available=available: available)
        stream = S.GradientStream(model, data, batch_size=4, provider="cpu")
        assert stream.workers == 4
        list(stream.run())
        assert stream.workers == want
    stream = S.GradientStream(model, data, batch_size=4, provider="cpu", workers=3)
    list(stream.run())
    assert stream.workers == 3  # a count asked for is kept


def test_cache_batch_keeps_a_batchs_largest_tensor_in_half_a_workers_cache_share(tmp_path, monkeypatch) -> None:
    assert P.cache_batch(1 << 20, 2, 64 << 20) == 16  # 32 MiB a worker, half of it, 1 MiB a sample
    assert P.cache_batch(1 << 20, 1, 64 << 20) == 32
    assert P.cache_batch(50 << 20, 2, 64 << 20) == P.MIN_CACHE_BATCH  # huge samples: never under 8
    assert P.cache_batch(1 << 20, 1, None) == 16  # unknown cache: 32 MiB

    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    model = auditor.load_model(path)
    shapes = {model.input_name: (2, 10, 12)}
    forward = auditor.graph.forward_shapes(model, 1, shapes)
    per_sample = P.largest_tensor(forward) * P.kernel_rows(forward)
    # sized without the gradient graph: its largest tensor is 3 row-shifted copies of a padded activation
    assert P.kernel_rows(forward) == 3
    assert 0.8 < per_sample / P.largest_tensor(auditor.graph.gradient_graph(model, 1, shapes)) < 1.25
    data = _data([40, 40, 40])
    monkeypatch.setattr(P, "last_level_cache", lambda: 2 * 2 * 9 * per_sample)  # 9 samples a worker's half
    assert S.GradientStream(model, data, batch_size=32, provider="cpu", workers=2).batch == 8  # at most 9: 8 pads nothing
    assert S.GradientStream(model, data, batch_size=32, provider="cpu", workers=1).batch == 20  # intra-op: asked


def test_kernel_rows_reads_the_attribute_or_the_weight_shape() -> None:
    from onnx import TensorProto, helper, numpy_helper

    def graph(*convs: onnx.NodeProto) -> onnx.ModelProto:
        w = numpy_helper.from_array(np.zeros((4, 2, 5, 3), np.float32), "w")
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 9])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        return helper.make_model(helper.make_graph(list(convs), "g", [x], [y], [w]))

    assert P.kernel_rows(graph(helper.make_node("Relu", ["x"], ["y"]))) == 1
    assert P.kernel_rows(graph(helper.make_node("Conv", ["x", "w"], ["y"]))) == 5  # from the weight's shape
    assert P.kernel_rows(graph(helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[5, 3]),
                               helper.make_node("Conv", ["h", "v"], ["y"], kernel_shape=[7, 1]))) == 7


def test_contraction_batch_gives_the_conv_with_fewest_outputs_enough_terms(tmp_path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((4, 2, 3, 3), np.float32), "w")
    v = numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "v")
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "v"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 12, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    m = onnx.shape_inference.infer_shapes(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, v])))
    # outputs 6x5 then 3x3: the second has 9 positions
    assert P.contraction_batch(m) == -(-P.MIN_CONTRACTION // 9)
    no_conv = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    assert P.contraction_batch(no_conv) == 1

    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    model = auditor.load_model(path)
    forward = auditor.graph.forward_shapes(model, 1, {model.input_name: (2, 10, 12)})
    floor = P.contraction_batch(forward)
    assert floor > P.MIN_CACHE_BATCH  # 10x12 outputs at most: 256 terms take 3 samples or more
    data = _data([3 * floor, 3 * floor])
    import unittest.mock as mock

    with mock.patch.object(P, "last_level_cache", lambda: 1), mock.patch.object(P, "MIN_PARALLEL_BYTES", 0):
        stream = S.GradientStream(model, data, batch_size=4 * floor, provider="cpu", workers=2)
    assert stream.batch == floor  # a cache of 1 byte asks for 8; the weight gradients' floor wins


def test_default_workers_honour_omp_num_threads(monkeypatch) -> None:
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = P.default_workers()
    assert cores == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray gives an actor with one CPU
    assert P.default_workers() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores + 5))  # never more than the cores
    assert P.default_workers() == cores
    for junk in ("", "0", "two", "-3"):
        monkeypatch.setenv("OMP_NUM_THREADS", junk)
        assert P.default_workers() == cores


def test_shapes_that_do_not_infer_leave_the_batch_unsized(tmp_path, monkeypatch) -> None:
    """The forward shapes only size the batch: a failure there must not stop the gradients."""
    from auditor.errors import ModelError

    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(*CASES["3x3 same"]), path)
    model = auditor.load_model(path)
    data = _data([6, 6])
    expected = S.GradientStream(model, data, batch_size=6, provider="cpu", workers=1)

    def fails(*args: object) -> None:
        raise ModelError("shape inference failed")

    monkeypatch.setattr(auditor.graph, "forward_shapes", fails)
    stream = S.GradientStream(model, data, batch_size=6, provider="cpu", workers=2)
    assert stream.batch == 6 and stream.workers == 2
    for (c, g), (c1, g1) in zip(stream.run(), expected.run()):
        assert c == c1
        np.testing.assert_allclose(g, g1, rtol=1e-5, atol=1e-7)
