"""`cycledecon` command line: the library's stages without Snakemake.

    cycledecon ingest stack.tif -o stack.ome.zarr [--voxel-size Z Y X] [--channel C] [--overwrite]
    cycledecon train results/patches/demo/patches.zarr -o results/models/demo [--config config.yaml]
    cycledecon deconvolve stack.tif --model model.pt -o out.ome.zarr [--config config.yaml]
        [--precision {auto,bf16,fp32}] [--memory-gb GIB] [--units {input,normalized}]
        [--output-dtype {float32,uint16}] [--overwrite]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from cycledecon import __version__
from cycledecon.boundary import user_errors_exit
from cycledecon.errors import CycledeconError
from cycledecon.infer_config import OUTPUT_DTYPES, UNITS
from cycledecon.voxel import VoxelSize

#: cycledecon.precision.CHOICES, spelled out so that the CLI does not import torch to parse (tests compare).
PRECISION_CHOICES = ("auto", "bf16", "fp32")


def _voxel_size(values: list[float] | None) -> VoxelSize | None:
    if values is None:
        return None
    try:
        return VoxelSize(*values)
    except ValueError as exc:
        raise CycledeconError(f"--voxel-size: {exc}") from None


def _config_section(path: Path | None, section: str) -> dict[str, Any]:
    """One section of a workflow config file (empty: the library's defaults)."""
    if path is None:
        return {}
    if not path.is_file():
        raise CycledeconError(f"{path}: config file not found")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CycledeconError(f"{path}: not valid YAML ({exc})") from None
    return dict(config.get(section) or {})


def _ingest(args: argparse.Namespace) -> None:
    from cycledecon.io import ingest

    ingest(args.input, args.output, channel=args.channel, voxel_size=_voxel_size(args.voxel_size),
           overwrite=args.overwrite)


def _train(args: argparse.Namespace) -> None:
    from cycledecon.io import check_writable
    from cycledecon.train import train

    check_writable(args.output, folder=True)
    model = train(args.patches, args.output, _config_section(args.config, "train"))
    print(f"model written to {model}")


def _deconvolve(args: argparse.Namespace) -> None:
    from cycledecon.infer import deconvolve_file

    config = _config_section(args.config, "deconvolve")
    if args.precision is not None:
        config["precision"] = args.precision
    for key in ("memory_gb", "units", "output_dtype"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    deconvolve_file(
        args.input,
        args.model,
        args.output,
        config,
        voxel_size=_voxel_size(args.voxel_size),
        channel=args.channel,
        overwrite=args.overwrite,
    )
    print(f"deconvolved stack written to {args.output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cycledecon", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"cycledecon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def stack_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"),
                             help="voxel size in µm, overriding the file's metadata")  # fmt: skip
        command.add_argument("--channel", type=int, help="channel index of a multi-channel stack")
        command.add_argument("--overwrite", action="store_true",
                             help="replace an existing output even if cycledecon did not write it (an earlier "
                                  "cycledecon output is replaced anyway; an input of the command never is)")  # fmt: skip

    ingest = commands.add_parser("ingest", help="convert a TIFF/OME-TIFF/ImageJ stack to OME-Zarr")
    ingest.add_argument("input", type=Path, help="TIFF, OME-TIFF or ImageJ stack (never modified)")
    ingest.add_argument("-o", "--output", type=Path, required=True, help="output .ome.zarr")
    stack_options(ingest)
    ingest.set_defaults(run=_ingest)

    train = commands.add_parser("train", help="train a model on a patch store")
    train.add_argument("patches", type=Path, help="patches.zarr written by the patches stage")
    train.add_argument("-o", "--output", type=Path, required=True,
                       help="model directory: model.pt, learned_psf.ome.tif, training log and figures")  # fmt: skip
    train.add_argument("--config", type=Path, help="workflow config file; its train: section is used")
    train.set_defaults(run=_train)

    deconvolve = commands.add_parser("deconvolve", help="deconvolve a stack with a trained model")
    deconvolve.add_argument("input", type=Path, help="TIFF/OME-TIFF or OME-Zarr stack, raw or normalized")
    deconvolve.add_argument("--model", type=Path, required=True, help="model.pt written by cycledecon train")
    deconvolve.add_argument("-o", "--output", type=Path, required=True, help="output .ome.zarr")
    deconvolve.add_argument("--config", type=Path, help="workflow config file; its deconvolve: section is used")
    deconvolve.add_argument(
        "--precision", choices=PRECISION_CHOICES,
        help="numeric precision of the network: auto (bf16 autocast with channels-last memory where the CPU "
             "or GPU runs bf16 natively, fp32 elsewhere), bf16 or fp32; overrides the config's "
             "deconvolve.precision (default there: auto)",
    )  # fmt: skip
    deconvolve.add_argument(
        "--memory-gb", type=float, metavar="GIB",
        help="memory budget in GiB for the blocks being computed; the block size is the largest that fits "
             "(unless the config sets deconvolve.block_size); overrides deconvolve.memory_gb (default "
             "there: half the free memory of the device, at most 16 GiB)",
    )  # fmt: skip
    deconvolve.add_argument(
        "--units", choices=UNITS,
        help="intensity units of the output: input (the raw stack's units, e.g. camera counts, offset kept as "
             "in the Richardson-Lucy baselines, clipped at 0; a CLAHE-normalized stack stays normalized, with a "
             "warning) or normalized (the network's own units); overrides deconvolve.units (default there: input)",
    )  # fmt: skip
    deconvolve.add_argument(
        "--output-dtype", choices=OUTPUT_DTYPES,
        help="float32, or uint16 storing round(value x deconvolve.uint16_scale) (default scale: 1 in input units, "
             "10000 in normalized units; clipped voxels are counted in the attributes); overrides "
             "deconvolve.output_dtype (default there: float32)",
    )  # fmt: skip
    stack_options(deconvolve)
    deconvolve.set_defaults(run=_deconvolve)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with user_errors_exit():
        args.run(args)


if __name__ == "__main__":
    main()
