"""What every command of the command line shares: the error guard, option types, option parsing.

:func:`guarded` is where a command's failures become exit codes: an
:class:`~auditor.errors.AuditorError` (bad input or options) one line and exit 2, Ctrl-C exit
130, anything else exit 101, an internal error.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .errors import AuditorError, OptionError

__all__ = ["guarded", "echo", "DebugOption", "DeviceOption", "parse_floats", "parse_ints", "data_kwargs",
           "load_data_file", "LabelColumnOption", "ImageSizeOption", "LayoutOption", "MeanOption", "StdOption",
           "GrayscaleOption", "TextColumnOption", "TokenizerOption", "MaxLengthOption", "PaddingOption"]

F = TypeVar("F", bound=Callable[..., Any])
DebugOption = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA when it works, else CPU), cuda or cpu.")]


def echo(message: str) -> None:
    typer.echo(message, err=True)


def guarded(fn: F) -> F:
    """Turn AuditorError into one line + exit 2, Ctrl-C into exit 130, a bug into exit 101."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug"))
        try:
            return fn(*args, **kwargs)
        except AuditorError as err:
            if debug:
                traceback.print_exc()
            echo(f"error: {err}")
            raise typer.Exit(code=2) from err
        except KeyboardInterrupt:
            echo("interrupted: nothing was written; earlier results are intact")
            raise typer.Exit(code=130) from None
        except typer.Exit:
            raise
        except Exception as err:  # a bug in the auditor, not bad input
            if debug:
                traceback.print_exc()
            echo(f"internal error: {type(err).__name__}: {err}. This is a bug in the auditor; rerun with "
                  "--debug and report the traceback.")
            raise typer.Exit(code=101) from err

    return wrapper  # type: ignore[return-value]


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as err:
        raise OptionError(f"{option} {text!r}: expected comma-separated numbers, e.g. {option} -0.2,0,0.2") from err


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as err:
        raise OptionError(f"{option} {text!r}: expected comma-separated class ids, e.g. {option} 3,5") from err


def _image_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        h, w = (int(p) for p in parts)
    except ValueError as err:
        raise OptionError(f"--image-size {text!r}: expected HxW, e.g. --image-size 32x32") from err
    return h, w


LabelColumnOption = Annotated[str, typer.Option(help="CSV/JSONL label column.")]
ImageSizeOption = Annotated[str | None, typer.Option(help="Resize images to HxW.")]
LayoutOption = Annotated[str, typer.Option(help="Image layout: NCHW or NHWC.")]
MeanOption = Annotated[str | None, typer.Option(help="Per-channel mean for images, comma-separated.")]
StdOption = Annotated[str | None, typer.Option(help="Per-channel std for images, comma-separated.")]
GrayscaleOption = Annotated[bool, typer.Option(help="Read images as one channel.")]
TextColumnOption = Annotated[list[str] | None, typer.Option(
    "--text-column", help="Text data (.csv/.jsonl): the text column; give it twice for text pairs.")]
TokenizerOption = Annotated[Path | None, typer.Option(help="Text data: the model's tokenizer.json.")]
MaxLengthOption = Annotated[int, typer.Option(help="Text data: truncate texts to this many tokens.")]
PaddingOption = Annotated[str, typer.Option(help="Text data: pad to the longest text, or to max_length.")]


def data_kwargs(*, label_column: str = "label", image_size: str | None = None, layout: str = "NCHW",
                 mean: str | None = None, std: str | None = None, grayscale: bool = False,
                 text_column: list[str] | None = None, tokenizer: Path | None = None, max_length: int = 128,
                 padding: str = "longest") -> dict[str, Any]:
    """The data options of the command line as :func:`auditor.load_data` keywords."""
    kwargs: dict[str, Any] = {"label_column": label_column, "layout": layout, "grayscale": grayscale,
                              "text_column": text_column or None, "tokenizer": tokenizer, "max_length": max_length,
                              "padding": padding}
    if image_size is not None:
        kwargs["image_size"] = _image_size(image_size)
    if mean is not None:
        kwargs["mean"] = parse_floats(mean, "--mean")
    if std is not None:
        kwargs["std"] = parse_floats(std, "--std")
    return kwargs


def load_data_file(path: Path, kwargs: dict[str, Any]) -> Any:
    from .data import load_data

    return load_data(path, **kwargs)
