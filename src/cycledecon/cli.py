"""`cycledecon` command line: the library's stages without Snakemake.

    cycledecon ingest stack.tif -o stack.ome.zarr [--voxel-size Z Y X] [--channel C] [--ngff-version {0.5,0.4}]
        [--overwrite]
    cycledecon train --widefield wf1.tif [wf2.tif …] --reference ref1.tif [ref2.tif …] -o models/mine
        [--config config.yaml] [--work DIR] [--voxel-size Z Y X] [--reference-voxel-size Z Y X]
        [--na NA --wavelength-nm NM --immersion-ri N]
    cycledecon train results/patches/demo/patches.zarr -o results/models/demo [--config config.yaml]
    cycledecon deconvolve stack.tif --model model.pt -o out.ome.zarr [--config config.yaml]
        [--precision {auto,bf16,fp32}] [--memory-gb GIB] [--units {input,normalized}]
        [--output-dtype {float32,uint16}] [--ngff-version {0.5,0.4}] [--overwrite]
    cycledecon evaluate out.ome.zarr [other.ome.zarr …] --truth truth.tif [-o metrics.csv]
    cycledecon export out.ome.zarr -o out.ome.tif [--format {ome-tiff,ngff-0.4,ngff-0.5}] [--overwrite]

Without --config, `train` uses the workflow's config/config.yaml when cycledecon runs from a source
checkout (the model the workflow trains), else the library's defaults; `deconvolve` uses the
library's defaults (the shipped config sets none).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from cycledecon import __version__
from cycledecon.boundary import user_errors_exit
from cycledecon.config.deconvolve import NGFF_VERSIONS, OUTPUT_DTYPES, UNITS
from cycledecon.config.devices import PRECISIONS
from cycledecon.errors import CycledeconError
from cycledecon.voxel import VoxelSize

#: cycledecon.export.FORMATS, spelled out for the same reason (tests compare).
EXPORT_FORMATS = ("ome-tiff", "ngff-0.4", "ngff-0.5")
NGFF_VERSION_HELP = ("OME-Zarr version of the output: 0.5 (zarr v3, default) or 0.4 (zarr v2) for viewers that "
                     "cannot read zarr v3 yet")  # fmt: skip
#: Options of the stack form of `train` (--widefield …), refused with a patch store.
STACK_FORM_OPTIONS = ("reference", "work", "voxel_size", "reference_voxel_size", "na", "wavelength_nm",
                      "immersion_ri")  # fmt: skip


def _voxel_size(values: list[float] | None, option: str = "--voxel-size") -> VoxelSize | None:
    if values is None:
        return None
    try:
        return VoxelSize(*values)
    except ValueError as exc:
        raise CycledeconError(f"{option}: {exc}") from None


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
    from cycledecon.ingest import ingest

    ingest(args.input, args.output, channel=args.channel, voxel_size=_voxel_size(args.voxel_size),
           overwrite=args.overwrite, ngff_version=args.ngff_version)  # fmt: skip


def _check_train_form(args: argparse.Namespace) -> None:
    """Exactly one of a patch store and --widefield stacks; the stack form's options only with it."""
    if (args.patches is None) == (args.widefield is None):
        raise CycledeconError("train: give either a patch store (cycledecon train PATCHES -o DIR) or raw stacks "
                              "(cycledecon train --widefield A.tif … --reference B.tif … -o DIR), "
                              + ("not both" if args.patches is not None else "neither was given"))  # fmt: skip
    if args.patches is not None:
        given = [f"--{k.replace('_', '-')}" for k in STACK_FORM_OPTIONS if getattr(args, k) is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise CycledeconError(f"train: {', '.join(given)} {verb} to --widefield stacks, not to a patch store")


def _train(args: argparse.Namespace) -> None:
    from cycledecon import campaign
    from cycledecon.atomic import check_writable

    _check_train_form(args)
    if args.widefield is not None:
        stacks = campaign.campaign_stacks(
            args.widefield, args.reference or [], _voxel_size(args.voxel_size),
            _voxel_size(args.reference_voxel_size, "--reference-voxel-size"),
        )  # fmt: skip
        optics = campaign.optics_from(args.na, args.wavelength_nm, args.immersion_ri)
        model = campaign.train_campaign(stacks, args.output, campaign.read_config(args.config), optics, args.work)
    else:
        from cycledecon.train import train

        check_writable(args.output, folder=True)
        model = train(args.patches, args.output, campaign.read_config(args.config).get("train") or {})
    print(f"model written to {model}")


def _evaluate(args: argparse.Namespace) -> None:
    from cycledecon.atomic import PLAIN_FILE
    from cycledecon.evaluate import score_against_truth, write_csv
    from cycledecon.io import check_output

    if args.output is not None:
        check_output(args.output, [*args.results, args.truth], kind=PLAIN_FILE)
    table = score_against_truth(args.results, args.truth)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.output is not None:
        print(f"metrics written to {write_csv(table, args.output)}")


def _export(args: argparse.Namespace) -> None:
    from cycledecon.export import export_store

    written = export_store(args.input, args.output, format=args.format, overwrite=args.overwrite)
    print(f"exported to {written}")


def _deconvolve(args: argparse.Namespace) -> None:
    from cycledecon.deconvolve import deconvolve_file

    config = _config_section(args.config, "deconvolve")
    if args.precision is not None:
        config["precision"] = args.precision
    for key in ("memory_gb", "units", "output_dtype", "ngff_version"):
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
    ingest.add_argument("--ngff-version", choices=NGFF_VERSIONS, default="0.5", help=NGFF_VERSION_HELP)
    stack_options(ingest)
    ingest.set_defaults(run=_ingest)

    train = commands.add_parser(
        "train", help="train a model on raw widefield and reference stacks (--widefield … --reference …), "
                      "or on a patch store written by the workflow's patches stage",
    )  # fmt: skip
    train.add_argument("patches", type=Path, nargs="?",
                       help="patches.zarr written by the patches stage (instead of --widefield/--reference)")  # fmt: skip
    train.add_argument("-o", "--output", type=Path, required=True,
                       help="model directory: model.pt, learned_psf.ome.tif, training log and figures")  # fmt: skip
    train.add_argument("--config", type=Path,
                       help="workflow config file; its ingest, normalize, patches and train sections are used "
                            "(default: the workflow's config/config.yaml when cycledecon runs from a source "
                            "checkout, else the library's defaults)")  # fmt: skip
    train.add_argument("--widefield", type=Path, nargs="+", metavar="STACK",
                       help="blurred widefield stacks to learn to deconvolve (TIFF, OME-TIFF or ImageJ; never "
                            "modified); with --reference, runs ingest, normalize, patches and training")  # fmt: skip
    train.add_argument("--reference", type=Path, nargs="+", metavar="STACK",
                       help="sharp reference stacks of similar structures, unpaired (e.g. confocal or "
                            "deconvolved); resampled to the widefield voxel size")  # fmt: skip
    train.add_argument("--work", type=Path,
                       help="folder of the intermediate stores (ingested, normalized, patches); a rerun with "
                            "the same folder resumes where it stopped (default: OUTPUT/work)")  # fmt: skip
    train.add_argument("--voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"),
                       help="voxel size in µm of the widefield stacks, overriding their metadata")  # fmt: skip
    train.add_argument("--reference-voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"),
                       help="voxel size in µm of the reference stacks, overriding their metadata")  # fmt: skip
    train.add_argument("--na", type=float,
                       help="numerical aperture of the widefield objective (with --wavelength-nm and "
                            "--immersion-ri; the shipped config's PSF model needs them)")  # fmt: skip
    train.add_argument("--wavelength-nm", type=float, help="emission wavelength of the widefield stacks in nm")
    train.add_argument("--immersion-ri", type=float, help="refractive index of the immersion medium (e.g. 1.515)")
    train.set_defaults(run=_train)

    deconvolve = commands.add_parser("deconvolve", help="deconvolve a stack with a trained model")
    deconvolve.add_argument("input", type=Path, help="TIFF/OME-TIFF or OME-Zarr stack, raw or normalized")
    deconvolve.add_argument("--model", type=Path, required=True, help="model.pt written by cycledecon train")
    deconvolve.add_argument("-o", "--output", type=Path, required=True, help="output .ome.zarr")
    deconvolve.add_argument("--config", type=Path, help="workflow config file; its deconvolve: section is used")
    deconvolve.add_argument(
        "--precision", choices=PRECISIONS,
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
    deconvolve.add_argument("--ngff-version", choices=NGFF_VERSIONS,
                            help=NGFF_VERSION_HELP + "; overrides deconvolve.ngff_version")  # fmt: skip
    stack_options(deconvolve)
    deconvolve.set_defaults(run=_deconvolve)

    evaluate = commands.add_parser("evaluate", help="score results against a ground truth (PSNR, SSIM, NRMSE, "
                                                    "Pearson r, FRC resolution)")  # fmt: skip
    evaluate.add_argument("results", type=Path, nargs="+", metavar="RESULT",
                          help="OME-Zarr or TIFF volumes to score (e.g. a deconvolved store and its raw stack), "
                               "each of the truth's shape; any intensity units (each is fitted to the truth "
                               "by least squares first)")  # fmt: skip
    evaluate.add_argument("--truth", type=Path, required=True, help="ground-truth volume (OME-Zarr or TIFF)")
    evaluate.add_argument("-o", "--output", type=Path, help="also write the table as CSV to this file")
    evaluate.set_defaults(run=_evaluate)

    export = commands.add_parser("export", help="convert an OME-Zarr image (deconvolved, baseline or ingested) to "
                                                "OME-TIFF for Fiji or to NGFF 0.4 (zarr v2) for older viewers")  # fmt: skip
    export.add_argument("input", type=Path,
                        help="OME-Zarr image to convert (NGFF 0.5 or 0.4); read only, never modified")  # fmt: skip
    export.add_argument("-o", "--output", type=Path, required=True,
                        help="file or store to write: NAME.ome.tif (OME-TIFF with the voxel size in µm) or "
                             "NAME.ome.zarr (NGFF 0.4 unless --format says otherwise)")  # fmt: skip
    export.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                        help="ome-tiff: OME-TIFF with physical voxel size, for Fiji/Bio-Formats; ngff-0.4: "
                             "OME-Zarr on zarr v2, for viewers without zarr v3 (MoBIE, older napari-ome-zarr); "
                             "ngff-0.5: OME-Zarr on zarr v3 (default: from the output's name)")  # fmt: skip
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing output even if cycledecon did not write it (never the input)")  # fmt: skip
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with user_errors_exit():
        args.run(args)


if __name__ == "__main__":
    main()
