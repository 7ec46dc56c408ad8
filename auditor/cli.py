"""Command line: ``auditor inspect | audit | compare | report | demo | dance``.

Only wiring: every computation lives in the library. Exit codes: 0 success, 1 a gate
check failed, 2 bad input or options (one line on stderr, no traceback unless
``--debug``), 101 an internal error (a bug: please report it), 130 interrupted.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from .cli_options import (
    DebugOption,
    DeviceOption,
    GrayscaleOption,
    ImageSizeOption,
    LabelColumnOption,
    LayoutOption,
    MaxLengthOption,
    MeanOption,
    PaddingOption,
    StdOption,
    TextColumnOption,
    TokenizerOption,
    data_kwargs,
    echo,
    guarded,
    load_data_file,
    parse_floats,
    parse_ints,
)
from .errors import OptionError

if TYPE_CHECKING:
    from rich.console import Console

    from .audit import AuditOptions, AuditResult
    from .comparison import CompareOptions, CompareResult
    from .gate import Check, GateResult, Quantity

app = typer.Typer(
    name="auditor",
    help="Audit an ONNX classifier for class interference: which classes it cannot keep apart, how badly, "
         "and why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# ----------------------------------------------------------------------------- inspect


@app.command()
@guarded
def inspect(
    model: Annotated[Path, typer.Argument(help="The .onnx file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Leave a tensor out of θ.")] = None,
    debug: DebugOption = False,
) -> None:
    """Describe MODEL: input, logits, classes, opset, producer and the parameters θ."""
    from .differentiable import gradient_support
    from .model import load_model

    m = load_model(model, exclude=exclude or ())
    summary = m.summary()
    rewrites, refused = gradient_support(m)
    summary["gradients"] = {"rewrites": [{"name": r.name, "description": r.description, "count": r.count}
                                         for r in rewrites], "refused": refused}
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    lines = [
        f"model       {summary['path']}",
        f"producer    {summary['producer']}  (opset {summary['opset']}, IR {summary['ir_version']})",
    ]
    for i, inp in enumerate(summary["inputs"]):
        shape = "x".join(str(d) for d in inp["shape"])
        layout = summary["input"]["layout"] if inp["name"] == summary["input"]["name"] else ""
        primary = f", {layout}" if layout and inp["role"] == "features" else ""
        lines.append(f"{'input' if i == 0 else '':<12}{inp['name']}  [{shape}] {inp['dtype']} ({inp['role']}{primary})")
    lines += [
        f"logits      {summary['logits']['tensor']}  ({summary['logits']['kind']}), K = {summary['n_classes']}",
        f"batch       {'fixed at ' + str(m.fixed_batch) if m.fixed_batch else 'dynamic'}",
        f"parameters  {summary['n_parameters']:,} in {len(m.parameters)} tensors",
        "ops         " + ", ".join(f"{k} x{v}" for k, v in summary["op_types"].items()),
    ]
    lines.append("gradients   " + (f"refused: {refused}" if refused else "supported"))
    lines += [f"rewrite     {r.name} x{r.count}: {r.description}" for r in rewrites]
    lines += [f"note        {n}" for n in summary["notes"]]
    lines.append("")
    width = max(len(p.name) for p in m.parameters)
    lines.append(f"  {'name':<{width}}  {'shape':<18} {'consumer':<14} {'axis':>4}  source")
    for p in m.parameters:
        shp = "x".join(map(str, p.shape))
        lines.append(f"  {p.name:<{width}}  {shp:<18} {p.consumer_op:<14} {p.output_axis:>4}  {p.source}"
                     + ("  (1-D)" if p.one_dimensional else ""))
    typer.echo("\n".join(lines))


# ----------------------------------------------------------------------------- audit


def _gate_checks(gate: list[str] | None, gate_config: Path | None, *,
                 quantities: dict[str, Quantity[Any]] | None = None, defaults: tuple[Check, ...] | None = None
                 ) -> list[Any]:
    """The checks given on the command line and in a TOML file, else the defaults (an audit's unless given)."""
    from .gate import AUDIT_QUANTITIES, DEFAULT_CHECKS, load_gate_config, parse_check

    table = AUDIT_QUANTITIES if quantities is None else quantities
    checks = list(load_gate_config(gate_config, table)) if gate_config else []
    checks += [parse_check(g, table) for g in gate or []]
    return checks or list(DEFAULT_CHECKS if defaults is None else defaults)


def _print_summary(result: AuditResult) -> None:
    """The audit's headline numbers, top pairs (where: by P; why: by R) and R's agreement with P."""
    from rich.table import Table

    names = result.class_names
    worst, worst_acc = result.worst_class()
    out = _console()
    out.print(f"overall accuracy {result.overall_accuracy:.3f}; worst class {names[worst]} ({worst_acc:.3f})")
    confusion = result.errors.confusion
    score = result.interference.pair_score
    where = Table(title="where the errors are: top pairs by pair confusion P (ties by R)", title_justify="left")
    why = Table(title="why: top pairs by pair score R (loss each class gains from the other's first step, / mean "
                      "loss)", title_justify="left")
    for table, first in ((where, "P"), (why, "R")):
        for column, justify in (("class a", "left"), ("class b", "left"), (first, "right"),
                                ("R" if first == "P" else "P", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for a, b, n in result.top_pairs_confusion[:5]:
        where.add_row(names[a], names[b], str(int(n)), f"{score[a, b]:.3f}")
    for a, b, r in result.top_pairs_interference[:5]:
        why.add_row(names[a], names[b], f"{r:.3f}", str(int(confusion[a, b] + confusion[b, a])))
    out.print(where if result.top_pairs_confusion else "where the errors are: no errors on the audit data")
    out.print(why if result.top_pairs_interference else "why: no pair has a defined pair score R")
    g = result.agreement
    if g.verdict() != "undefined":
        out.print(f"interference explains {g.verdict()} of the confusion: precision@{g.k} {g.precision_at_k:.2f}, "
                  f"AUC {g.auc:.2f}, Spearman {g.spearman:.2f} (R against P over {g.n_pairs} pairs)")


def _print_gate(gate: GateResult | None) -> None:
    from rich.table import Table

    if gate is None:
        return
    table = Table(title=f"gate: {gate.verdict.upper()}", title_justify="left")
    for column in ("status", "check", "value", "warn", "fail"):
        table.add_column(column, justify="right" if column in ("value", "warn", "fail") else "left")
    for c in gate.checks:
        table.add_row(c.status, c.name, "undefined" if math.isnan(c.value) else f"{c.value:.4g}",
                      "" if c.warn is None else f"{c.warn:g}", "" if c.fail is None else f"{c.fail:g}")
    _console().print(table)


def _console() -> Console:
    """stdout, wide enough that tables do not wrap in CI logs."""
    from rich.console import Console

    return Console(width=max(shutil.get_terminal_size((120, 24)).columns, 100), soft_wrap=True,
                   highlight=False, markup=False)


def _executor(ray: str | None, workers: int | None, device: str) -> Any:
    """The executor for ``--ray [auto|ADDRESS]`` and ``--ray-workers N`` (None: serial, in this process)."""
    if ray is None:
        if workers is not None:
            raise OptionError("--ray-workers needs --ray (a local Ray) or --ray auto / --ray ADDRESS (a cluster)")
        return None
    from .execution import RayExecutor

    return RayExecutor(ray, workers=workers, gpus=False if device == "cpu" else None)


def _run(model: Path, data: Path, out: Path, *, gradient_data: Path | None, options: AuditOptions,
         checks: list[Check], dance: Path | None, report: bool, data_kwargs: dict[str, Any],
         quiet: bool, executor: Any = None, checkpoint: Path | None = None) -> AuditResult:
    from .audit import run_audit
    from .model import load_model
    from .save import save_audit

    say = (lambda m: None) if quiet else echo
    m = load_model(model, exclude=options.exclude)
    d = load_data_file(data, data_kwargs)
    g = load_data_file(gradient_data, data_kwargs) if gradient_data else None
    say(f"auditing {model} ({m.n_classes} classes, {m.n_parameters:,} parameters) on {len(d)} samples")
    result = run_audit(m, d, options, gradient_data=g, gate=checks, dance=dance, log=say, progress=None if not quiet
                       else False, executor=executor, checkpoint=checkpoint)
    for path in save_audit(result, out, report=report):
        say(f"wrote {path}")
    return result


class _OptionalValueCommand(TyperCommand):
    """A command whose ``--ray`` may come without a value (then it means "local").

    Click options take a value or none, not either (Typer has no ``flag_value``), so a bare
    ``--ray`` (last, or followed by another option) gets the value ``local`` before parsing.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        fixed = []
        for i, arg in enumerate(args):
            fixed.append(arg)
            if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                fixed.append("local")
        return super().parse_args(ctx, fixed)


@app.command(cls=_OptionalValueCommand)
@guarded
def audit(
    model: Annotated[Path, typer.Argument(help="The .onnx classifier.")],
    data: Annotated[Path, typer.Option("--data", help=".npz (x, y), an image folder, or a .csv.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for results.json and report.html.")] = Path(
        "auditor-report"),
    gradient_data: Annotated[Path | None, typer.Option(
        "--gradient-data", help="A second set (e.g. the training data) for gradients and directions.")] = None,
    device: DeviceOption = "auto",
    normalization: Annotated[str, typer.Option(help="filter, layer, global or none.")] = "filter",
    include_1d: Annotated[bool, typer.Option("--include-1d", help="Move biases and norm parameters too.")] = False,
    alphas: Annotated[str | None, typer.Option(help="α grid, comma-separated, 0 included.")] = None,
    classes: Annotated[str | None, typer.Option(help="Ego classes, comma-separated ids.")] = None,
    pairs: Annotated[int | None, typer.Option(
        help="2-D interference models for the top N pairs by the pair score R and by confusion P (default: as many as "
             "the budget allows; 0: none).")] = None,
    candidates: Annotated[int | None, typer.Option(
        help="With many classes: run the CCT for the classes of the top N pairs only (default 20 when K > 64).")
    ] = None,
    grid: Annotated[int | None, typer.Option(
        help="Points per axis of the 2-D models, every point evaluated (default: a 25x25 grid evaluated on a "
             "lattice refined near each minimum, as the budget allows).")] = None,
    budget: Annotated[float, typer.Option(
        help="Everything except the cross-class test may cost this multiple of the CCT's own cost; the 2-D "
             "models are sized to fit what the other stages leave. --pairs and --grid override it.")] = 0.5,
    basis: Annotated[str, typer.Option(help="orthonormal, or gradients (the paper's own axes).")] = "orthonormal",
    learning_rate: Annotated[float, typer.Option(help="η of the gradients basis.")] = 0.01,
    batch_size: Annotated[int, typer.Option(help="Samples per runtime call.")] = 256,
    max_per_class: Annotated[int | None, typer.Option(help="Cap the audit data per class (stratified).")] = None,
    strategy: Annotated[str, typer.Option(help="auto, inputs or rebuild (how perturbed weights are run).")] = "auto",
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Leave a tensor out of θ.")] = None,
    gate: Annotated[list[str] | None, typer.Option(
        "--gate", help="A gate check NAME=WARN:FAIL, e.g. worst_class_accuracy=0.9:0.8 (repeatable).")] = None,
    gate_config: Annotated[Path | None, typer.Option(help="TOML file of [gate.NAME] warn/fail bounds.")] = None,
    dance: Annotated[Path | None, typer.Option(help="A label-dancing log to add to the report.")] = None,
    label_column: LabelColumnOption = "label",
    image_size: ImageSizeOption = None,
    layout: LayoutOption = "NCHW",
    mean: MeanOption = None,
    std: StdOption = None,
    grayscale: GrayscaleOption = False,
    text_column: TextColumnOption = None,
    tokenizer: TokenizerOption = None,
    max_length: MaxLengthOption = 128,
    padding: PaddingOption = "longest",
    report: Annotated[bool, typer.Option(help="Write report.html too.")] = True,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[auto|ADDRESS]",
        help="Spread the work over Ray: --ray alone starts a local Ray (or joins RAY_ADDRESS), --ray auto joins "
             "the cluster running here, --ray ADDRESS joins that one. Needs pip install 'auditor[ray]'.")] = None,
    ray_workers: Annotated[int | None, typer.Option(
        "--ray-workers", help="Ray workers (default: one per GPU, or one per node without GPUs).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="Write each finished cell here; rerun with the same directory to resume.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
    debug: DebugOption = False,
) -> None:
    """Audit MODEL on DATA: write results.json and report.html into OUT; exit 1 if a gate check fails."""
    from .audit import AuditOptions

    options = AuditOptions(
        normalization=normalization, include_1d=include_1d, alphas=parse_floats(alphas, "--alphas"),
        classes=parse_ints(classes, "--classes"), pairs=pairs, candidates=candidates, grid=grid, budget=budget,
        basis=basis,
        learning_rate=learning_rate, batch_size=batch_size, max_per_class=max_per_class, provider=device,
        strategy=strategy, exclude=tuple(exclude or ()))
    checks = _gate_checks(gate, gate_config)
    result = _run(model, data, out, gradient_data=gradient_data, options=options, checks=checks, dance=dance,
                  report=report, quiet=quiet, executor=_executor(ray, ray_workers, device), checkpoint=checkpoint,
                  data_kwargs=data_kwargs(label_column=label_column, image_size=image_size, layout=layout,
                                           mean=mean, std=std, grayscale=grayscale, text_column=text_column,
                                           tokenizer=tokenizer, max_length=max_length, padding=padding))
    _print_summary(result)
    _print_gate(result.gate)
    if result.gate is not None and result.gate.failed:
        raise typer.Exit(code=1)


# ----------------------------------------------------------------------------- compare


def _compare(baseline: Path, candidate: Path, data: Path, out: Path, *, options: CompareOptions,
             checks: list[Check], report: bool, data_kwargs: dict[str, Any], quiet: bool) -> CompareResult:
    from .cli_compare import print_comparison
    from .comparison import compare
    from .save import save_compare

    say = (lambda m: None) if quiet else echo
    result = compare(baseline, candidate, data, options, gate=checks, data_kwargs=data_kwargs, log=say,
                     progress=None if not quiet else False)
    if result.inputs.line:
        say(f"inputs: {result.inputs.line}")
    for path in save_compare(result, out, report=report):
        say(f"wrote {path}")
    print_comparison(result, _console())
    _print_gate(result.gate)
    return result


@app.command()
@guarded
def compare(
    baseline: Annotated[Path, typer.Argument(help="The .onnx model in production (the reference).")],
    candidate: Annotated[Path, typer.Argument(help="The .onnx model that would replace it.")],
    data: Annotated[Path, typer.Option("--data", help=".npz (x, y), an image folder, a .csv, or text.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for results.json and report.html.")] = Path(
        "auditor-compare"),
    alpha: Annotated[float, typer.Option(help="Level of the per-class McNemar tests (Holm-corrected).")] = 0.05,
    confidence: Annotated[float, typer.Option(help="Level of the intervals of the accuracy changes.")] = 0.95,
    examples: Annotated[int, typer.Option(help="Flipped samples shown per (true, new prediction) group.")] = 4,
    interference: Annotated[bool, typer.Option(
        "--interference", help="Also audit both models and compare their pair scores (two cross-class tests).")
    ] = False,
    normalization: Annotated[str, typer.Option(help="--interference: filter, layer, global or none.")] = "filter",
    max_per_class: Annotated[int | None, typer.Option(help="Cap the data per class (stratified).")] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per runtime call.")] = 256,
    device: DeviceOption = "auto",
    gate: Annotated[list[str] | None, typer.Option(
        "--gate", help="A gate check NAME=WARN:FAIL, e.g. regressed_classes=0:1 (repeatable).")] = None,
    gate_config: Annotated[Path | None, typer.Option(help="TOML file of [gate.NAME] warn/fail bounds.")] = None,
    label_column: LabelColumnOption = "label",
    image_size: ImageSizeOption = None,
    layout: LayoutOption = "NCHW",
    mean: MeanOption = None,
    std: StdOption = None,
    grayscale: GrayscaleOption = False,
    text_column: TextColumnOption = None,
    tokenizer: TokenizerOption = None,
    max_length: MaxLengthOption = 128,
    padding: PaddingOption = "longest",
    report: Annotated[bool, typer.Option(help="Write report.html too.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
    debug: DebugOption = False,
) -> None:
    """Compare CANDIDATE with BASELINE on DATA: which classes regressed, which pairs got worse; exit 1 if a gate
    check fails."""
    from .comparison import CompareOptions
    from .gate import COMPARE_QUANTITIES, DEFAULT_COMPARE_CHECKS

    options = CompareOptions(alpha=alpha, confidence=confidence, examples=examples, batch_size=batch_size,
                             provider=device, max_per_class=max_per_class, interference=interference,
                             normalization=normalization)
    checks = _gate_checks(gate, gate_config, quantities=COMPARE_QUANTITIES, defaults=DEFAULT_COMPARE_CHECKS)
    result = _compare(baseline, candidate, data, out, options=options, checks=checks, report=report, quiet=quiet,
                      data_kwargs=data_kwargs(label_column=label_column, image_size=image_size, layout=layout,
                                               mean=mean, std=std, grayscale=grayscale, text_column=text_column,
                                               tokenizer=tokenizer, max_length=max_length, padding=padding))
    if result.gate is not None and result.gate.failed:
        raise typer.Exit(code=1)


# ----------------------------------------------------------------------------- report


@app.command()
@guarded
def report(
    results: Annotated[Path, typer.Argument(help="A results.json written by `auditor audit` or `auditor compare`.")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    debug: DebugOption = False,
) -> None:
    """Render report.html again from RESULTS (no model or data needed)."""
    from .audit import AuditResult
    from .comparison import KIND, CompareResult
    from .report import render_compare_report, render_report

    if _results_kind(results) == KIND:
        render_compare_report(CompareResult.load(results), out)
    else:
        render_report(AuditResult.load(results), out)
    typer.echo(f"wrote {out}")


def _results_kind(path: Path) -> str | None:
    """The ``kind`` of a results.json ("compare" for a comparison; an audit's has none); None if unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # the loader says what is wrong
    return data.get("kind") if isinstance(data, dict) else None


# ----------------------------------------------------------------------------- demo


@app.command()
@guarded
def demo(
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the demo report (default ./auditor-demo, or ./auditor-demo-compare).")] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Compare the demo model with a retrained candidate instead of auditing it.")] = False,
    device: DeviceOption = "auto",
    debug: DebugOption = False,
) -> None:
    """Audit the bundled digits model and write its report into ./auditor-demo/ (no network, < 1 min on CPU).

    With --compare: compare it with the bundled candidate (the same MLP retrained after a data bug starved digit 3)
    and write the comparison into ./auditor-demo-compare/.
    """
    from .audit import AuditOptions
    from .demo import demo_paths
    from .gate import DEFAULT_CHECKS, DEFAULT_COMPARE_CHECKS

    paths = demo_paths()
    if compare:
        from .comparison import CompareOptions

        out = out or Path("auditor-demo-compare")
        _compare(paths.model, paths.candidate, paths.data, out, options=CompareOptions(provider=device),
                 checks=list(DEFAULT_COMPARE_CHECKS), report=True, data_kwargs=data_kwargs(), quiet=False)
        typer.echo(f"\nreport: {(out / 'report.html').resolve()}")
        return
    out = out or Path("auditor-demo")
    options = AuditOptions(provider=device)  # the default budget sizes the 2-D models
    result = _run(paths.model, paths.data, out, gradient_data=paths.train, options=options,
                  checks=list(DEFAULT_CHECKS), dance=paths.dance, report=True, quiet=False,
                  data_kwargs=data_kwargs())
    _print_summary(result)
    _print_gate(result.gate)
    typer.echo(f"\nreport: {(out / 'report.html').resolve()}")


# ----------------------------------------------------------------------------- dance


@app.command()
@guarded
def dance(
    log: Annotated[Path | None, typer.Argument(help="A label-dancing log written by the training hook.")] = None,
    checkpoints: Annotated[str | None, typer.Option(
        help='A glob of exported checkpoints, e.g. "ckpts/epoch_*.onnx" (natural order).')] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Probe data for --checkpoints (.npz, ...).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for dance.json and dance.html.")] = Path(
        "auditor-dance"),
    results: Annotated[Path | None, typer.Option(
        help="An audit's results.json, to compare dancing pairs with interference and confusion pairs.")] = None,
    max_per_class: Annotated[int, typer.Option(help="Probe samples per class for --checkpoints.")] = 100,
    device: DeviceOption = "auto",
    label_column: LabelColumnOption = "label",
    image_size: ImageSizeOption = None,
    layout: LayoutOption = "NCHW",
    mean: MeanOption = None,
    std: StdOption = None,
    grayscale: GrayscaleOption = False,
    text_column: TextColumnOption = None,
    tokenizer: TokenizerOption = None,
    max_length: MaxLengthOption = 128,
    padding: PaddingOption = "longest",
    debug: DebugOption = False,
) -> None:
    """Label dancing from a training LOG, or from --checkpoints predicting --data."""
    from .dancing import dance_analysis, predict_checkpoints
    from .save import save_dance

    if (log is None) == (checkpoints is None):
        raise OptionError("give either a LOG or --checkpoints GLOB (with --data), not both or neither")
    if checkpoints is not None:
        if data is None:
            raise OptionError("--checkpoints needs --data: the probe set the checkpoints predict")
        kwargs = data_kwargs(label_column=label_column, image_size=image_size, layout=layout, mean=mean, std=std,
                              grayscale=grayscale, text_column=text_column, tokenizer=tokenizer,
                              max_length=max_length, padding=padding)
        probe = load_data_file(data, kwargs).stratified(max_per_class)
        analysis = dance_analysis(predict_checkpoints(checkpoints, probe, provider=device))
    else:
        assert log is not None
        analysis = dance_analysis(log)
    if results is not None:
        from .audit import AuditResult

        audit_result = AuditResult.load(results)
        analysis = audit_result.with_dance(analysis).dance or analysis
    written = save_dance(analysis, out)
    names = analysis.class_names or [str(c) for c in range(analysis.n_classes)]
    typer.echo(f"wrote {' and '.join(str(p) for p in written)}")
    typer.echo("most dancing pairs (flips between a and b over the run):")
    for a, b, n in analysis.dancing_pairs(top=5):
        typer.echo(f"  {names[a]} <-> {names[b]}: {n}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="auditor")


if __name__ == "__main__":  # pragma: no cover
    main()
