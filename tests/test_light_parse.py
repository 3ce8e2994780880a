"""The Snakefile parses with the workflow's light dependencies: a dry run needs neither torch nor matplotlib."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO, SNAKEMAKE, imported_modules, make_workdir

#: Packages a parse must not need; each is shadowed by a package whose import fails as if absent.
HEAVY = ("torch", "matplotlib")
#: The jobs' scientific stack: without it, a parse still checks every section and plans, so a user
#: whose jobs run in conda environments needs only snakemake and cycledecon.
JOB_STACK = (*HEAVY, "dask", "scipy", "skimage", "tifffile", "zarr", "ome_zarr", "psfmodels", "tqdm")


def blocked_env(tmp_path, packages=HEAVY) -> dict[str, str]:
    """An environment whose PYTHONPATH shadows `packages` with ones that raise ModuleNotFoundError,
    so any import of them (by snakemake, the Snakefile or the library) fails as if not installed."""
    shims = tmp_path / "shims"
    for name in packages:
        (shims / name).mkdir(parents=True)
        (shims / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name} is blocked by the test', name='{name}')\n"
        )
    path = os.pathsep.join(p for p in (str(shims), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def test_the_block_works(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import torch"], env=blocked_env(tmp_path),
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0 and "torch is blocked by the test" in result.stderr


def test_dry_run_without_torch_or_matplotlib_plans_every_job(tmp_path):
    work = make_workdir(tmp_path)
    result = subprocess.run([SNAKEMAKE, "--cores", "1", "-n"], cwd=work, env=blocked_env(tmp_path),
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rule in ("demo", "ingest", "patches", "train", "deconvolve", "evaluate"):
        assert f"rule {rule}:" in result.stdout, rule


def test_dry_run_without_the_jobs_scientific_stack_plans_every_job(tmp_path):
    work = make_workdir(tmp_path)
    result = subprocess.run([SNAKEMAKE, "--cores", "1", "-n"], cwd=work, env=blocked_env(tmp_path, JOB_STACK),
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rule train:" in result.stdout and "rule deconvolve:" in result.stdout


def test_without_torch_a_bad_key_of_a_light_section_still_fails_before_any_job(tmp_path):
    work = make_workdir(tmp_path, {"normalize": {"clahe": {"clip_limit": 2.0}}})
    result = subprocess.run([SNAKEMAKE, "--cores", "1", "-n"], cwd=work, env=blocked_env(tmp_path),
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode != 0 and "normalize.clahe.clip_limit" in result.stdout + result.stderr


def test_the_whole_config_is_checked_without_importing_the_jobs_scientific_stack():
    """Not even an import that would be caught: with the stack installed, any import shows in sys.modules."""
    code = ("import sys, yaml; from cycledecon.config import parse_workflow_config as p; "
            "p(yaml.safe_load(open(sys.argv[1])))")
    assert imported_modules(code, str(REPO / "config" / "config.yaml"), among=JOB_STACK) == set()
