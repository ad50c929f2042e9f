"""The committed coefficient module is exactly what `hushlight gen-coeffs` writes."""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from dsp import codegen
from dsp import fixedpoint as fp
from tools.cli import main


def test_committed_coefficients_have_not_drifted(tmp_path: Path) -> None:
    out = tmp_path / "coeffs.py"
    assert main(["gen-coeffs", "--out", str(out)]) == 0
    committed = codegen.DEFAULT_OUT.read_text()
    assert out.read_text() == committed, (
        "firmware/hushlight/coeffs.py differs from the design; run `hushlight gen-coeffs`"
    )


# Each line: the environment of one regeneration (None: unset).  OpenBLAS
# picks its kernel from OPENBLAS_CORETYPE (this machine's default, Haswell,
# and two older ones); numpy picks its SIMD loops from what the CPU has,
# minus NPY_DISABLE_CPU_FEATURES.
KERNELS: list[dict[str, str | None]] = [
    {"OPENBLAS_CORETYPE": "Haswell"},
    {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None},
    {"OPENBLAS_CORETYPE": "Prescott"},
    {"OPENBLAS_CORETYPE": "Sandybridge"},
]
if platform.machine() in ("x86_64", "AMD64"):
    KERNELS.append({"NPY_DISABLE_CPU_FEATURES": "AVX512_ICL,X86_V4,X86_V3"})

REGENERATE = """
import sys
from dsp import weighting
from tools.cli import main
code = main(["gen-coeffs", "--out", sys.argv[1]])
print(" ".join(c.hex() for c in weighting.design(16000).hf))
raise SystemExit(code)
"""


def test_every_blas_and_simd_kernel_regenerates_the_same_file(tmp_path: Path) -> None:
    committed = codegen.DEFAULT_OUT.read_text()
    fits = set()
    for i, kernel in enumerate(KERNELS):
        env = {k: v for k, v in os.environ.items() if k not in kernel}
        env |= {k: v for k, v in kernel.items() if v is not None}
        out = tmp_path / f"coeffs{i}.py"
        run = subprocess.run(
            [sys.executable, "-c", REGENERATE, str(out)],
            cwd=codegen.DEFAULT_OUT.parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, (kernel, run.stderr)
        assert out.read_text() == committed, f"{kernel} regenerates other coefficients"
        fits.add(run.stdout.splitlines()[-1])
    # the kernels do round differently: the same text comes from different floats
    assert len(fits) > 1, fits


def test_generated_module_says_so_and_holds_the_quantised_design() -> None:
    text = codegen.render()
    assert text.splitlines()[0] == codegen.FIRST_LINE
    assert "do not edit" in text.splitlines()[0]
    tree = ast.parse(text)
    values = {
        t.targets[0].id: ast.literal_eval(t.value)  # type: ignore[attr-defined]
        for t in tree.body
        if isinstance(t, ast.Assign)
    }
    fx = fp.fixed(48000)
    chain = values["CHAINS"][48000]
    assert chain[0] == fx.hp1.k and chain[2:7] == (
        fx.hf.b0,
        fx.hf.b1,
        fx.hf.b2,
        fx.hf.a1,
        fx.hf.a2,
    )
    assert chain[12:14] == (fx.sub_len, fx.fast_k)
    assert set(values["EQ"]) == {
        f"{r}:{m}" for r in (48000, 44100, 32000, 16000) for m in values["MICS"]
    }


def test_a_missing_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gen-coeffs", "--out", str(tmp_path / "nope" / "coeffs.py")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "nope" in err
