"""The flags that say what inputs are sent: how a signature's are filled (``bench.payloads.input_plan``),
on sweep, capacity and inspect; the images ``tfsbench codecs`` encodes."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.argtypes import positive_int
from bench.payloads.input_plan import PIXEL_RANGES, parse_input_range, parse_input_shape


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """--images, --input-shape, --input-range, --pixel-range, --bytes-input, --inputs-file."""
    p.add_argument(
        "--images", type=Path, default=None, metavar="DIR", help="directory of PNG/JPEG images (default: synthetic)"
    )
    p.add_argument(
        "--input-shape",
        type=parse_input_shape,
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="dims after the batch for an input the signature leaves unknown, e.g. input_1=224x224x3 (repeatable)",
    )
    p.add_argument(
        "--input-range",
        type=parse_input_range,
        action="append",
        default=[],
        metavar="NAME=LO:HI",
        help="value range of a non-image input, e.g. threshold=0:1 (default floats [0,1), integers 0..255)",
    )
    p.add_argument(
        "--pixel-range",
        choices=tuple(PIXEL_RANGES),
        default=None,
        help="what a float image input's pixels span (default 0:1; integer image inputs get 0..255); "
        "write --pixel-range=-1:1, since argparse takes a bare -1:1 for a flag",
    )
    p.add_argument(
        "--bytes-input",
        action="append",
        default=[],
        metavar="NAME",
        help="send PNG/JPEG image bytes to this string input (inputs named *_bytes get them anyway; repeatable)",
    )
    p.add_argument(
        "--inputs-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="replay your own request: a TF Serving JSON body (instances or inputs) or an .npz of named arrays; "
        "its rows are repeated or sliced to each batch size",
    )


def add_codecs_input_arguments(p: argparse.ArgumentParser) -> None:
    """``tfsbench codecs``: the dtype and size of the images it encodes."""
    p.add_argument(
        "--input-dtype",
        choices=("uint8", "float32", "float64"),
        default="uint8",
        help="send the images as this dtype (floats scaled to [0, 1], as a float model takes them; default uint8)",
    )
    p.add_argument("--image-size", type=positive_int, default=128, metavar="N", help="N x N images (default 128)")
