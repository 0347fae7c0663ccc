"""The ``repgeo`` command as a package: light to start, every subcommand registered, the public face lazy.

The start-up checks run in a fresh interpreter and read ``sys.modules`` (what was imported), not the clock.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import repgeo
from repgeo.cli import build_parser, main
from repgeo.metrics import compare

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "pandas", "numpy", "matplotlib", "scipy", "sklearn")
COMMANDS = ("metrics", "counterexamples", "audit", "layers", "distill", "demo", "fetch-assets")


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter (this checkout first on the path); it prints one JSON object."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=None)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_LOADED = ("json.dumps({'heavy': [m for m in " + repr(HEAVY) + " if m in sys.modules], 'out': buf.getvalue(), "
           "'code': code})")


def _help_of(argv: list[str]) -> dict:
    return _fresh(
        "import contextlib, io, json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from repgeo.cli import main\n"
        "buf = io.StringIO()\n"
        "code = None\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code\n"
        f"print({_LOADED})\n"
    )


def test_help_imports_nothing_heavy_and_lists_every_command():
    result = _help_of(["--help"])
    assert result["code"] == 0
    assert result["heavy"] == []
    for command in COMMANDS:
        assert f"\n    {command}" in result["out"], command


def test_building_the_parser_imports_neither_torch_nor_transformers():
    result = _fresh(
        "import io, json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from repgeo.cli import build_parser\n"
        "parser = build_parser()\n"
        "buf = io.StringIO()\n"
        "code = parser.parse_args(['metrics', 'a.npy', 'b.npy']).command\n"
        f"print({_LOADED})\n"
    )
    assert result["code"] == "metrics"
    assert result["heavy"] == []


def test_python_dash_m_repgeo_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "repgeo", "--version"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == f"repgeo {repgeo.__version__}"
    done = subprocess.run([sys.executable, "-m", "repgeo", "no-such-command"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_the_console_script_points_at_main():
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text[text.index("[project.scripts]"):]
    module, _, name = re.search(r'^repgeo\s*=\s*"([^"]+)"', scripts, re.M).group(1).partition(":")
    __import__(module)
    assert getattr(sys.modules[module], name) is main


@pytest.mark.parametrize("argv, names", [
    (["fetch-assets", "--help"], ["minilm", "rotten_tomatoes", "smollm2"]),
    (["demo", "--help"], ["kd,proj_mse", "procrustes"]),
])
def test_subcommand_help_fills_in_names_known_only_after_import(argv, names):
    result = _help_of(argv)
    assert result["code"] == 0
    assert not re.search(r"\{(demo|study|all|methods)\}", result["out"]), result["out"]
    for name in names:
        assert name in result["out"]


def test_a_bad_demo_method_is_refused_at_parse_time(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["demo", "--methods", "kd,bogus"])
    assert exc.value.code == 2
    assert "choose from kd," in capsys.readouterr().err


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_metrics_command_prints_the_library_values(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    Y = X @ rng.standard_normal((6, 4)) + 0.1 * rng.standard_normal((40, 4))
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "y.csv", Y, delimiter=",")
    assert main(["metrics", str(tmp_path / "x.npy"), str(tmp_path / "y.csv"), "--metrics", "procrustes,cka",
                 "--normalize", "rows"]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    expected = compare(X, Y, ["procrustes", "cka"], center=True, normalize="rows")
    assert set(printed) == {"procrustes", "cka"}
    for name, value in expected.items():
        assert float(printed[name]) == pytest.approx(float(value), abs=5e-7)


def test_import_repgeo_is_light_and_every_public_name_resolves():
    result = _fresh(
        "import io, json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import repgeo\n"
        "buf = io.StringIO()\n"
        "code = sorted(repgeo.__all__)\n"
        f"print({_LOADED})\n"
    )
    assert result["heavy"] == []
    assert {"Moments", "cka", "compare", "procrustes", "fg", "collect", "audit", "distill",
            "run_distillation"} <= set(result["code"])
    import repgeo.audit
    import repgeo.distill
    import repgeo.metrics
    import repgeo.probe

    for name in repgeo.__all__:
        assert getattr(repgeo, name) is not None, name
    assert repgeo.cka is repgeo.metrics.cka and repgeo.Moments is repgeo.metrics.Moments
    assert repgeo.collect is repgeo.probe.collect
    assert repgeo.run_distillation is repgeo.distill.run_distillation
    assert repgeo.audit.audit is not None  # the package, whose entry point is audit.audit
    assert set(repgeo.__all__) <= set(dir(repgeo))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        repgeo.nope  # noqa: B018
