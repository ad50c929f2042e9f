"""The committed coefficient module is exactly what `hushlight gen-coeffs` writes."""

from __future__ import annotations

import ast
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
