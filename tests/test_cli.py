"""The command line: a user error is one line on stderr and exit status 1."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import imported_modules, sha256, tiny_model, write_ome


def test_user_error_is_printed_once(tmp_path):
    missing = tmp_path / "missing.pt"
    result = subprocess.run(
        [sys.executable, "-m", "cycledecon.cli", "deconvolve", str(tmp_path / "in.ome.zarr"),
         "--model", str(missing), "-o", str(tmp_path / "out.ome.zarr")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such model file"], result.stderr
    assert not (tmp_path / "out.ome.zarr").exists()


def cycledecon(*args: object, memory_limit: int | None = None, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    """Run the CLI; `memory_limit` (bytes) caps the child's data segment, so that a regression that
    allocates without bound fails there instead of exhausting the machine; `prefix` runs it through
    another command (see `without_root_override`)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))

    return subprocess.run([*prefix, sys.executable, "-m", "cycledecon.cli", *map(str, args)], capture_output=True,
                          text=True, preexec_fn=limit if memory_limit else None)  # fmt: skip


def without_root_override() -> list[str]:
    """A command prefix under which file permissions hold: root ignores them unless it drops its
    DAC override capabilities (setpriv), as in the containers the tests often run in."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def command_args(command: str, tmp_path, out) -> tuple[list[object], list]:
    """The arguments of `command` writing to `out`, and its input files."""
    if command == "train":
        return ["train", tmp_path / "patches.zarr", "-o", out], []
    raw, model = tiny_model(tmp_path)
    if command == "ingest":
        return ["ingest", raw, "-o", out], [raw]
    return ["deconvolve", raw, "--model", model, "-o", out], [raw, model]


@pytest.mark.parametrize("command", ["ingest", "deconvolve", "train"])
def test_output_under_a_file_is_one_line(tmp_path, command):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder was meant")
    for out in (blocker / "out.ome.zarr", blocker / "sub" / "out.ome.zarr"):
        args, inputs = command_args(command, tmp_path, out)
        before = {p: sha256(p) for p in [*inputs, blocker]}
        result = cycledecon(*args)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"error: {out}: cannot be written: {blocker} is a file, not a folder"], result.stderr[-2000:]
        assert {p: sha256(p) for p in before} == before


@pytest.mark.parametrize("command", ["ingest", "deconvolve", "train"])
def test_output_in_a_folder_without_write_permission_is_one_line(tmp_path, command):
    prefix = without_root_override()
    folder = tmp_path / "locked"
    folder.mkdir()
    args, inputs = command_args(command, tmp_path, folder / "out.ome.zarr")
    before = {p: sha256(p) for p in inputs}
    folder.chmod(0o555)
    try:
        result = cycledecon(*args, prefix=prefix)
    finally:
        folder.chmod(0o755)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {folder / 'out.ome.zarr'}: cannot be written: no permission to write in {folder}"
    ], result.stderr[-2000:]
    assert {p: sha256(p) for p in inputs} == before and list(folder.iterdir()) == []


def test_ingest_onto_the_raw_tiff_keeps_it(tmp_path):
    raw = write_ome(tmp_path / "good.tif", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8))
    before = sha256(raw)
    result = cycledecon("ingest", raw, "-o", raw)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {raw}: "), result.stderr
    assert raw.is_file() and sha256(raw) == before
    assert [p.name for p in tmp_path.iterdir()] == ["good.tif"]


def test_ingest_onto_a_user_folder_keeps_it(tmp_path):
    raw = write_ome(tmp_path / "good.tif", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8))
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = cycledecon("ingest", raw, "-o", folder)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {folder}: already exists and is not an OME-Zarr image written by cycledecon; "
        "refusing to replace it (move it away, choose another output, or pass --overwrite)"
    ], result.stderr
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"


def test_deconvolve_refuses_an_inf_voxel_naming_the_file(tmp_path):
    from cycledecon.model import UNet3d, save_model

    stack = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    stack[1, 2, 3] = np.inf
    raw = write_ome(tmp_path / "inf.ome.tif", stack)
    generator = {"depth": 1, "base_channels": 2}
    metadata = {"generator": generator, "receptive_field": [9, 9, 9], "patch_shape": [4, 16, 16], "channels": 1,
                "normalization": {"method": "percentile", "percentiles": [1.0, 99.0], "clip": True},
                "voxel_size": [0.25, 0.1, 0.1]}  # fmt: skip
    model = save_model(tmp_path / "model.pt", UNet3d(generator), metadata, learned_psf=None)
    out = tmp_path / "out.ome.zarr"
    result = cycledecon("deconvolve", raw, "--model", model, "-o", out)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {raw}: contains NaN or Inf values"], result.stderr
    assert not out.exists()


def test_deconvolve_precision_flag_is_recorded_and_overrides_the_config(tmp_path):
    from cycledecon.io import read_ome_zarr

    raw, model = tiny_model(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("deconvolve:\n  precision: bf16\n  block_size: [8, 16, 16]\n")
    outputs = {}
    for flag in ("fp32", "bf16"):
        out = tmp_path / f"{flag}.ome.zarr"
        result = cycledecon("deconvolve", raw, "--model", model, "-o", out, "--config", config, "--precision", flag)
        assert result.returncode == 0, result.stderr
        data, _, attrs = read_ome_zarr(out)
        assert attrs["deconvolution"]["precision"] == flag
        assert attrs["deconvolution"]["block_size"] == [8, 16, 16]  # the rest of the config still applies
        outputs[flag] = data.compute()
    assert outputs["fp32"].dtype == outputs["bf16"].dtype == np.float32
    assert not np.array_equal(outputs["fp32"], outputs["bf16"])  # bf16 did run


def test_deconvolve_imports_neither_dask_distributed_nor_the_psf_models(tmp_path):
    """Looking a dask scheduler up by name, or choosing a rechunk method, imports dask.distributed
    (installed with bioio, slow to import) for a cluster no command uses; a trained model needs no
    theoretical PSF, so psfmodels and the scipy.signal it loads stay out of the command's start-up."""
    raw, model = tiny_model(tmp_path, shape=(8, 128, 128))  # wide enough for a pyramid level
    config = tmp_path / "config.yaml"
    config.write_text("deconvolve:\n  block_size: [8, 64, 64]\n")  # blocks unlike the store's chunks: a rechunk
    code = "import sys; from cycledecon.cli import main; main(sys.argv[1:])"
    args = ("deconvolve", str(raw), "--model", str(model), "-o", str(tmp_path / "out.ome.zarr"),
            "--config", str(config))
    assert imported_modules(code, *args, among=("distributed", "psfmodels", "scipy.signal")) == set()


def test_a_rule_script_runs_dask_without_importing_dask_distributed(tmp_path):
    """Snakemake scripts enter `user_errors_exit` with their log: a compute and a rechunk inside."""
    code = ("import sys, dask.array as da; from cycledecon.boundary import user_errors_exit\n"
            "with user_errors_exit(sys.argv[1]):\n"
            "    da.ones((8, 8), chunks=4).rechunk(8).sum().compute()")  # fmt: skip
    assert imported_modules(code, str(tmp_path / "rule.log")) == set()


def test_deconvolve_memory_gb_flag_sets_the_budget_and_a_too_small_one_is_one_line(tmp_path):
    from cycledecon.io import read_ome_zarr

    raw, model = tiny_model(tmp_path)
    out = tmp_path / "out.ome.zarr"
    result = cycledecon("deconvolve", raw, "--model", model, "-o", out, "--memory-gb", "0.5")
    assert result.returncode == 0, result.stderr
    record = read_ome_zarr(out)[2]["deconvolution"]
    assert record["memory_gb"] == 0.5 and record["block_size"] == [8, 24, 24]  # the whole (8, 24, 24) stack
    result = cycledecon("deconvolve", raw, "--model", model, "-o", tmp_path / "small.ome.zarr", "--memory-gb", "0.01")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "memory_gb" in line]  # after the run's INFO lines
    assert len(errors) == 1 and errors[0].startswith("error: deconvolve.memory_gb: 0.01 GiB is too small"), result.stderr


def test_deconvolve_units_and_dtype_flags_override_the_config(tmp_path):
    """The config asks for normalized uint16; the flags for input units in float32, which win and
    are recorded; the two outputs are one result through the recorded inverse."""
    from cycledecon.io import read_ome_zarr

    raw, model = tiny_model(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("deconvolve:\n  units: normalized\n  output_dtype: uint16\n  precision: fp32\n")
    runs = {"config": [], "flags": ["--units", "input", "--output-dtype", "float32"]}
    outputs = {}
    for name, flags in runs.items():
        out = tmp_path / f"{name}.ome.zarr"
        result = cycledecon("deconvolve", raw, "--model", model, "-o", out, "--config", config, *flags)
        assert result.returncode == 0, result.stderr
        data, _, attrs = read_ome_zarr(out)
        outputs[name] = data.compute(), attrs["deconvolution"]
    (stored, by_config), (in_counts, by_flags) = outputs["config"], outputs["flags"]
    assert by_config["intensity"]["units"] == "normalized" and stored.dtype == np.uint16
    assert by_config["uint16_scale"] == 10000.0
    assert by_flags["intensity"]["units"] == "input" and in_counts.dtype == np.float32 and in_counts.min() >= 0
    inverse = by_flags["intensity"]["inverse"]
    kept = stored > 0  # normalized uint16 clips negatives at 0
    expected = stored[kept] / 10000.0 * inverse["scale"] + inverse["offset"]
    np.testing.assert_allclose(in_counts[kept], expected, rtol=0, atol=1e-4 * inverse["scale"])


def test_precision_takes_the_librarys_choices_and_unset_options_leave_the_config_to_decide():
    from cycledecon.cli import build_parser
    from cycledecon.config.devices import PRECISIONS

    args = ["deconvolve", "in.tif", "--model", "m.pt", "-o", "out.ome.zarr"]
    assert build_parser().parse_args(args).precision is None  # unset: the config (default auto) decides
    assert build_parser().parse_args(args).units is None and build_parser().parse_args(args).output_dtype is None
    for choice in PRECISIONS:
        assert build_parser().parse_args([*args, "--precision", choice]).precision == choice
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args, "--precision", "float16"])


@pytest.mark.parametrize("field, value, message", [
    ("generator", {"depth": 40, "base_channels": 2}, "metadata.generator.depth: expected 1 to 6, got 40"),
    ("voxel_size", [0, 0.1, 0.1], "metadata.voxel_size: expected three finite sizes > 0 (µm), got [0, 0.1, 0.1]"),
])  # fmt: skip
def test_deconvolve_refuses_a_forged_model_within_a_memory_limit(tmp_path, field, value, message):
    """A forged model file is refused before G is built, under 1 GiB, with one line; inputs kept."""
    import torch

    from cycledecon.model import UNet3d, save_model

    raw = write_ome(tmp_path / "raw.ome.tif", np.random.default_rng(0).integers(100, 4000, (8, 24, 24), np.uint16))
    generator = {"depth": 1, "base_channels": 2}
    metadata = {"generator": generator, "receptive_field": [10, 10, 10], "patch_shape": [4, 16, 16], "channels": 1,
                "normalization": {"method": "percentile", "percentiles": [1.0, 99.0], "clip": True},
                "voxel_size": [0.25, 0.1, 0.1]}  # fmt: skip
    model = save_model(tmp_path / "model.pt", UNet3d(generator), metadata, learned_psf=None)
    payload = torch.load(model, weights_only=True)
    payload["metadata"][field] = value
    torch.save(payload, model)
    before = sha256(raw), sha256(model)
    out = tmp_path / "out.ome.zarr"
    result = cycledecon("deconvolve", raw, "--model", model, "-o", out, memory_limit=1 << 30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {model}: {message}"], result.stderr[-2000:]
    assert (sha256(raw), sha256(model)) == before and not out.exists()


@pytest.mark.parametrize("command", ["ingest", "deconvolve"])
def test_a_forged_tiff_header_is_one_line_within_a_memory_limit(tmp_path, command):
    """A tiny TIFF whose pages claim 100000×100000 uint16 is refused by both entry points before
    anything is allocated (the child's data segment is capped at 1 GiB); inputs are kept."""
    from cycledecon.model import UNet3d, save_model
    from test_io import forged_tiff

    raw = forged_tiff(tmp_path / "forged.tif")
    out = tmp_path / "out.ome.zarr"
    args = ["ingest", raw, "-o", out, "--voxel-size", "0.25", "0.1", "0.1"]
    if command == "deconvolve":
        generator = {"depth": 1, "base_channels": 2}
        metadata = {"generator": generator, "receptive_field": [10, 10, 10], "patch_shape": [4, 16, 16],
                    "channels": 1, "normalization": None, "voxel_size": [0.25, 0.1, 0.1]}  # fmt: skip
        model = save_model(tmp_path / "model.pt", UNet3d(generator), metadata, learned_psf=None)
        args = ["deconvolve", raw, "--model", model, "-o", out, "--voxel-size", "0.25", "0.1", "0.1"]
    before = sha256(raw)
    result = cycledecon(*args, memory_limit=1 << 30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {raw}: not a readable TIFF, or truncated (its header "
                                                   "claims 3×100000×100000 uint16"), result.stderr[-2000:]  # fmt: skip
    assert sha256(raw) == before and not out.exists()


def test_ingest_of_a_truncated_tiff_prints_one_line_not_tifffile_logs(tmp_path):
    """tifffile logs a corrupt page instead of raising; that log becomes the one line, once."""
    raw = write_ome(tmp_path / "cut.ome.tif", np.random.default_rng(0).integers(1, 999, (8, 16, 16), np.uint16))
    raw.write_bytes(raw.read_bytes()[: int(raw.stat().st_size * 0.97)])
    result = cycledecon("ingest", raw, "-o", tmp_path / "out.ome.zarr")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {raw}: not a readable TIFF, or truncated"), result.stderr


def test_a_file_system_refusal_during_the_write_is_one_line(tmp_path, capfd, monkeypatch):
    """What the early checks cannot foresee (the disk fills up mid-write) is one line too, and
    leaves no store behind."""
    import errno

    from cycledecon import io
    from cycledecon.cli import main

    raw = write_ome(tmp_path / "good.tif", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8))
    out = tmp_path / "out.ome.zarr"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".out.ome.zarr.partial" / "0"))

    monkeypatch.setattr(io, "write_multiscale", full)
    with pytest.raises(SystemExit) as info:
        main(["ingest", str(raw), "-o", str(out)])
    assert info.value.code == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines[-1] == f"error: {tmp_path / '.out.ome.zarr.partial' / '0'}: No space left on device", lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.tif"]


# ---------------------------------------------------------------------------------- --overwrite
def _foreign(kind: str, path):
    if kind == "a user folder":
        path.mkdir()
        (path / "notes.txt").write_text("mine")
    else:
        path.write_bytes(b"not ours")
    return path


@pytest.mark.parametrize("command", ["ingest", "deconvolve"])
@pytest.mark.parametrize("kind", ["a user folder", "a file"])
def test_overwrite_replaces_an_output_cycledecon_did_not_write(tmp_path, command, kind):
    from cycledecon.io import is_cycledecon_image

    out = _foreign(kind, tmp_path / "out.ome.zarr")
    args, inputs = command_args(command, tmp_path, out)
    before = {p: sha256(p) for p in inputs}
    names = sorted(p.name for p in tmp_path.iterdir())
    refused = cycledecon(*args)
    assert refused.returncode == 1 and "or pass --overwrite" in refused.stderr and out.exists()
    assert not is_cycledecon_image(out)
    result = cycledecon(*args, "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert is_cycledecon_image(out) and {p: sha256(p) for p in inputs} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no leftovers


OWN_INPUTS = {
    "ingest onto its raw stack": (["ingest", "{raw}", "-o", "{raw}"], "{raw}: is an input of this command"),
    "deconvolve onto its model": (["deconvolve", "{raw}", "--model", "{model}", "-o", "{model}"],
                                  "{model}: is an input of this command"),
    "deconvolve onto its raw stack": (["deconvolve", "{raw}", "--model", "{model}", "-o", "{raw}"],
                                      "{raw}: is an input of this command"),
    "deconvolve onto its inputs' folder": (["deconvolve", "{raw}", "--model", "{model}", "-o", "{dir}"],
                                            "{dir}: contains {raw}, an input of this command"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OWN_INPUTS))
def test_overwrite_never_replaces_an_input_or_the_model(tmp_path, case):
    args, message = OWN_INPUTS[case]
    raw, model = tiny_model(tmp_path)
    names = {"raw": raw, "model": model, "dir": tmp_path}
    before = {p: sha256(p) for p in (raw, model)}
    result = cycledecon(*(a.format(**names) for a in args), "--overwrite")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {message.format(**names)}; choose another output path"], result.stderr[-2000:]
    assert {p: sha256(p) for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "raw.ome.tif"]


def all_arguments(parser) -> list:
    """Every argument of `parser` and of its subcommands, but argparse's own --help."""
    import argparse

    actions = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                actions += all_arguments(command)
        elif not isinstance(action, argparse._HelpAction):
            actions.append(action)
    return actions


def test_every_argument_has_help_text():
    from cycledecon.cli import build_parser

    missing = [a.dest for a in all_arguments(build_parser()) if not a.help]
    assert not missing, missing


NOT_A_MODEL = {
    "a pickle, not a model": lambda: __import__("pickle").dumps({"weights": [1.0, 2.0]}, protocol=4),
    "a pickled object": lambda: __import__("pickle").dumps(__import__("datetime").date(2026, 1, 1)),
    "not a pickle": lambda: b"P3\n# a text file, not a model\n",
    "an empty file": lambda: b"",
}


@pytest.mark.parametrize("kind", NOT_A_MODEL)
def test_a_file_that_is_not_a_model_is_our_one_line(tmp_path, kind):
    raw = write_ome(tmp_path / "raw.ome.tif", np.random.default_rng(0).random((4, 8, 8), np.float32))
    model = tmp_path / "notes.pt"
    model.write_bytes(NOT_A_MODEL[kind]())
    result = cycledecon("deconvolve", raw, "--model", model, "-o", tmp_path / "out.ome.zarr")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {model}: not a cycledecon model (unreadable: not a PyTorch archive, or a truncated one; "
        "model.pt is written by cycledecon train)"], result.stderr


def test_a_torch_file_holding_objects_is_refused_in_our_words(tmp_path):
    import datetime

    import torch

    raw = write_ome(tmp_path / "raw.ome.tif", np.random.default_rng(0).random((4, 8, 8), np.float32))
    model = tmp_path / "dated.pt"
    torch.save({"saved": datetime.date(2026, 1, 1)}, model)
    result = cycledecon("deconvolve", raw, "--model", model, "-o", tmp_path / "out.ome.zarr")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {model}: not a cycledecon model (it holds Python objects (datetime.date) besides tensors and plain "
        "data; refused without loading them)"], result.stderr


# ------------------------------------------------------------------------- export and NGFF version
def test_cli_constants_are_the_librarys():
    from cycledecon.cli import EXPORT_FORMATS
    from cycledecon.config.deconvolve import NGFF_VERSIONS
    from cycledecon.export import FORMATS
    from cycledecon.io import NGFF_FORMATS

    assert EXPORT_FORMATS == FORMATS and set(NGFF_VERSIONS) == set(NGFF_FORMATS)


def zarr_format(store) -> int:
    import zarr

    return zarr.open_group(str(store), mode="r").metadata.zarr_format


def test_ngff_version_flag_of_ingest_and_deconvolve(tmp_path):
    from cycledecon.io import image_name, read_ome_zarr

    raw, model = tiny_model(tmp_path)
    ingested = tmp_path / "old.ome.zarr"
    assert cycledecon("ingest", raw, "-o", ingested, "--ngff-version", "0.4").returncode == 0
    assert zarr_format(ingested) == 2 and image_name(ingested) == "old"
    config = tmp_path / "config.yaml"
    config.write_text("deconvolve:\n  ngff_version: 0.4\n  precision: fp32\n")  # YAML's number 0.4
    for flags, expected in [([], 2), (["--ngff-version", "0.5"], 3)]:
        out = tmp_path / f"out{expected}.ome.zarr"
        result = cycledecon("deconvolve", raw, "--model", model, "-o", out, "--config", config, *flags)
        assert result.returncode == 0, result.stderr[-2000:]
        assert zarr_format(out) == expected and image_name(out) == "raw"  # named after the input
        data, voxel_size, _ = read_ome_zarr(out)
        assert data.shape == (8, 24, 24) and voxel_size.as_tuple() == (0.25, 0.1, 0.1)
    assert cycledecon("ingest", raw, "-o", tmp_path / "x.ome.zarr", "--ngff-version", "0.3").returncode == 2


def test_export_writes_ome_tiff_and_ngff_04_and_keeps_the_input(tmp_path):
    import tifffile

    from cycledecon.io import image_name, read_ome_zarr

    raw = write_ome(tmp_path / "cell.ome.tif", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8), (0.3, 0.2, 0.1))
    store = tmp_path / "cell.ome.zarr"
    assert cycledecon("ingest", raw, "-o", store).returncode == 0
    before = {p: sha256(p) for p in store.rglob("*") if p.is_file()}

    result = cycledecon("export", store, "-o", tmp_path / "fiji.ome.tif")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"exported to {tmp_path / 'fiji.ome.tif'}"
    with tifffile.TiffFile(tmp_path / "fiji.ome.tif") as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        np.testing.assert_array_equal(tif.asarray(), tifffile.imread(raw))
    assert [pixels[f"PhysicalSize{a}"] for a in "ZYX"] == [0.3, 0.2, 0.1]

    for flags, expected in [([], 2), (["--format", "ngff-0.5"], 3)]:
        out = tmp_path / f"v{expected}.ome.zarr"
        assert cycledecon("export", store, "-o", out, *flags).returncode == 0
        assert zarr_format(out) == expected and image_name(out) == "cell"
        assert read_ome_zarr(out)[1].as_tuple() == (0.3, 0.2, 0.1)
    assert {p: sha256(p) for p in store.rglob("*") if p.is_file()} == before

    refused = cycledecon("export", store, "-o", tmp_path / "fiji.ome.zarr", "--format", "ome-tiff")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [f"error: {tmp_path / 'fiji.ome.zarr'}: ome-tiff exports are "
                                                   "named *.ome.tif"]  # fmt: skip
    assert not (tmp_path / "fiji.ome.zarr").exists()
