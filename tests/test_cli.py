"""The ``repgeo`` command as a package: light to start, every subcommand registered, the public face lazy.

The start-up checks run in a fresh interpreter and read ``sys.modules`` (what was imported), not the clock.
"""

from __future__ import annotations

import argparse
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


# -------------------------------------------------------------------------------------- one vocabulary, every flag


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_and_shows_its_default():
    parser = build_parser()
    subs = _subparsers(parser)
    assert set(subs) == set(COMMANDS)
    for name, sub in subs.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{name} {action.dest}: no help"
            if action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0 and action.option_strings:
                shown = sub._get_formatter()._get_help_string(action) or ""
                assert "default" in shown, f"{name} {action.option_strings[0]}: default {action.default!r} not shown"
        for flag in ("-v, --verbose", "-q, --quiet", "--debug"):
            assert flag in text, f"{name}: {flag} missing"
        if any("--out" in a.option_strings for a in sub._actions) or name == "audit":
            out = next(a for a in sub._actions if "--out" in a.option_strings)
            assert out.default and not out.required, f"{name}: --out must have a default"


def test_help_lists_every_command_with_its_one_line_help():
    parser = build_parser()
    text = parser.format_help()
    listed = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))._choices_actions
    assert [a.dest for a in listed] == list(COMMANDS)
    for action in listed:
        assert action.help and "\n" not in action.help and len(action.help) <= 80, action.dest
        assert re.search(rf"^ +{re.escape(action.dest)} +{re.escape(action.help)}$", text, re.M), action.dest


def test_user_facing_text_spells_distill_one_way():
    texts = [build_parser().format_help()] + [sub.format_help() for sub in _subparsers(build_parser()).values()]
    for text in texts:
        assert not re.search(r"\bdistil\b", text), text


def test_metrics_takes_teacher_and_student_as_options_too(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((30, 5)), rng.standard_normal((30, 3))
    np.save(tmp_path / "t.npy", X)
    np.save(tmp_path / "s.npy", Y)
    assert main(["metrics", str(tmp_path / "t.npy"), str(tmp_path / "s.npy"), "--metrics", "cka"]) == 0
    positional = capsys.readouterr().out
    assert main(["metrics", "--teacher", str(tmp_path / "t.npy"), "--student", str(tmp_path / "s.npy"),
                 "--metrics", "cka"]) == 0
    assert capsys.readouterr().out == positional
    assert float(positional.split()[1]) == pytest.approx(float(compare(X, Y, ["cka"])["cka"]), abs=5e-7)


# -------------------------------------------------------------------------------------- logging and progress


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory):
    from repgeo.distill.toy import make_toy_setup

    return make_toy_setup(tmp_path_factory.mktemp("cli_log"), "classification", n_train=8, n_eval=4)["teacher"]


def _repgeo(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "repgeo", *argv], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_transformers_bars_and_reports_are_silenced_unless_verbose(tiny_model_folder, tmp_path):
    quiet = _repgeo("layers", str(tiny_model_folder), cwd=tmp_path)
    assert quiet.returncode == 0 and "hidden_states" in quiet.stdout
    assert quiet.stderr == "", quiet.stderr
    loud = _repgeo("layers", str(tiny_model_folder), "-v", cwd=tmp_path)
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert "Loading weights" in loud.stderr  # transformers' own bar, shown with -v
    before = _repgeo("-v", "layers", str(tiny_model_folder), cwd=tmp_path)  # a global flag before the command too
    assert before.returncode == 0 and "Loading weights" in before.stderr


def test_audit_progress_and_info_on_stderr_and_none_with_quiet(tiny_model_folder, tmp_path):
    (tmp_path / "t.txt").write_text("the film\nthe plot\nthe actor\nthe scene\nthe end\n")
    argv = ["audit", "--teacher", str(tiny_model_folder), "--student", str(tiny_model_folder), "--data", "t.txt",
            "--n-perm", "0", "--n-folds", "0", "--metrics", "cka"]
    default = _repgeo(*argv, "--out", "a", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert "collect: 100%" in default.stderr and "5 stimuli, 5 teacher × 5 student layers" in default.stderr
    assert "wrote a/audit.csv" in default.stdout
    quiet = _repgeo(*argv, "--out", "b", "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout.replace("b/", "a/") == default.stdout
    assert "collect:" not in quiet.stderr and "5 stimuli," not in quiet.stderr
    assert len(quiet.stderr.splitlines()) == 1 and quiet.stderr.startswith("warning: ")  # warnings stay (n < width)
    assert (tmp_path / "a" / "audit.csv").read_text() == (tmp_path / "b" / "audit.csv").read_text()


def test_audit_out_has_a_default(tiny_model_folder, tmp_path):
    (tmp_path / "t.txt").write_text("the film\nthe plot\nthe actor\nthe scene\n")
    done = _repgeo("audit", "--teacher", str(tiny_model_folder), "--student", str(tiny_model_folder), "--data",
                   "t.txt", "--n-perm", "0", "--n-folds", "0", "--metrics", "cka", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "repgeo-audit" / "audit.csv").is_file()


# -------------------------------------------------------------------------------------- several processes


def test_torchrun_audit_in_two_gloo_processes_writes_the_single_process_table(tiny_model_folder, tmp_path):
    """The documented recipe ``python -m torch.distributed.run --nproc_per_node 2 -m repgeo audit … --mode stream``
    (2 CPU processes, gloo) gives, byte for byte, the table of one process; rank 0 alone writes the report."""
    import os

    from transformers import AutoTokenizer

    from repgeo.distill.toy import tiny_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_folder)
    student = tiny_model("bert", len(tokenizer), hidden_size=16, num_layers=2, tokenizer=tokenizer, seed=3)
    student.save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    rng = np.random.default_rng(0)
    words = "the a film plot actor scene good bad fine awful movie story".split()
    (tmp_path / "t.txt").write_text("\n".join(" ".join(rng.choice(words, rng.integers(2, 9))) for _ in range(22)))
    argv = ["audit", "--teacher", str(tiny_model_folder), "--student", "student", "--data", "t.txt", "--mode",
            "stream", "--batch-size", "4", "--metrics", "procrustes,cka,fg"]
    single = _repgeo(*argv, "--out", "single", "-q", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "repgeo", *argv, "--out", "two"], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote two/audit.csv") == 1  # rank 0 only
    assert "22 stimuli, 5 teacher × 3 student layers" in two.stderr and "mode stream" in two.stderr
    assert (tmp_path / "two" / "audit.csv").read_text() == (tmp_path / "single" / "audit.csv").read_text()
    names = [sorted(p.name for p in (tmp_path / run).iterdir()) for run in ("two", "single")]
    assert names[0] == names[1]


def test_errors_are_one_line_and_unexpected_ones_point_at_debug(capsys):
    from repgeo.assets import AssetError
    from repgeo.cli._common import CommandError, report

    assert report("demo", CommandError("a claim FAILED", status=1)) == 1
    assert capsys.readouterr().err == "repgeo demo: a claim FAILED\n"
    assert report("fetch-assets", AssetError("could not download\nrun `x` where the registry is reachable")) == 2
    assert capsys.readouterr().err == ("repgeo fetch-assets: could not download; run `x` where the registry is "
                                       "reachable\n")
    assert report("audit", ValueError("first line\n    4 |  detail")) == 2
    assert capsys.readouterr().err == "repgeo audit: first line; 4 |  detail\n"
    assert report("audit", KeyError("hidden_states.9")) == 2
    assert capsys.readouterr().err == ("repgeo audit: KeyError: 'hidden_states.9' (rerun with --debug for the "
                                       "traceback)\n")


def test_fetch_assets_shows_a_bar_over_the_assets_unless_quiet(monkeypatch, capsys):
    from repgeo.assets import registry

    fetched = []
    monkeypatch.setattr(registry, "fetch", lambda name, **_: fetched.append(name) or Path("/x") / name)
    assert main(["fetch-assets", "trec", "banking77"]) == 0
    err = capsys.readouterr().err
    assert "fetch-assets: 100%" in err and "2/2" in err and fetched == ["trec", "banking77"]
    assert main(["fetch-assets", "trec", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "trec" in captured.out


def test_repgeo_logger_levels_follow_v_and_q(capsys):
    import logging

    from repgeo.log import configure, logger

    for verbose, quiet, level in ((0, False, logging.INFO), (1, False, logging.DEBUG), (0, True, logging.WARNING)):
        configure(verbose, quiet)
        logger.debug("d")
        logger.info("i")
        logger.warning("w")
        shown = capsys.readouterr().err.split()
        assert shown == [x for x, lv in (("d", 10), ("i", 20), ("w", 30)) if lv >= level]
    assert len([h for h in logger.handlers if h.get_name() == "repgeo-cli"]) == 1  # one handler, however often
    configure()


def test_torchrun_distill_command_in_two_gloo_processes(tmp_path):
    """The README's launcher line, ``torchrun … -m repgeo distill --config run.yaml``, on 2 CPU processes: status
    0, one run folder, one summary (rank 0), one epoch in 2 steps of the global batch. (That 2 processes train as 1
    on the global batch is tests/test_distill_ddp.py.)"""
    import os

    import yaml

    from repgeo.distill.toy import make_toy_setup

    setup = make_toy_setup(tmp_path / "setup", "classification", n_train=16, n_eval=4)
    config = {"task": "classification", "output_dir": str(tmp_path / "run"),
              "teacher": {"path": str(setup["teacher"])}, "student": {"keep_every": 2},
              "data": {"train": str(setup["train"])}, "loss": {"metric": "procrustes", "pooling": "tokens"},
              "geometry": {"enabled": False},
              "trainer": {"max_steps": 2, "per_device_train_batch_size": 4, "save_strategy": "no",
                          "disable_tqdm": True, "use_cpu": True, "report_to": "none", "ddp_backend": "gloo",
                          "dataloader_pin_memory": False}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "repgeo", "distill", "--config", "run.yaml", "-q"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    summary = [line for line in done.stdout.splitlines() if "'train_loss'" in line]
    assert len(summary) == 1  # rank 0 reports
    # 2 steps of 2 x 4 rows cover the 16 training rows once: both processes trained, each on its share
    assert re.search(r"'epoch': '1(\.0)?'", summary[0]), summary[0]
