"""Bad input: one test per row of the tables in docs/bad-inputs.md ("Bad input: what repgeo says").

Each test feeds a realistic mistake through a public entry point (the ``repgeo`` command, ``load_config`` /
``config_from_dict``, ``build_trainer`` / ``run_distillation``, ``audit``, ``collect``, the metric functions) and
checks the exception type and the message: it must name the file / key / argument and say what is wrong. Command
line errors must exit with status 2 and print the message as one line on stderr, without a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoTokenizer, BertConfig, BertModel

import repgeo
from repgeo.audit import audit, audit_features
from repgeo.cli import main
from repgeo.distill import ConfigError, DataError, build_trainer, config_from_dict, load_config, run_distillation
from repgeo.distill.toy import make_toy_setup, tiny_model, word_tokenizer
from repgeo.probe import collect
from tests.test_distill_runs import _config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random BERT teacher (4 blocks, width 32, 2 labels) with its tokenizer, and toy CSV data."""
    return make_toy_setup(tmp_path_factory.mktemp("bad_inputs"), "classification", n_train=16, n_eval=8)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``repgeo ARGV`` in this process: (exit status, stderr). An uncaught exception fails the test."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def build(setup, tmp_path: Path, **sections):
    return build_trainer(config_from_dict(_config(setup, tmp_path / "run", **sections)), verbose=False)


# ------------------------------------------------------------------------------------------- configuration files

BROKEN_YAML = """\
task: classification
loss:
  metric: cka
 alpha: 2.0
"""


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(BROKEN_YAML)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"config: {path}, line 4, column 2: not valid YAML: expected <block end>")
    assert "(while parsing a block mapping that starts at line 1); check the indentation of this line" in msg
    assert msg.endswith("\n    4 |  alpha: 2.0")
    assert "<unicode string>" not in msg
    code, err = run_cli(["distill", "--config", str(path)], capsys)
    assert code == 2 and f"repgeo distill: configuration error: config: {path}, line 4, column 2" in err


def test_yaml_syntax_error_from_the_shell(tmp_path):
    """The same mistake through ``python -m repgeo`` in a fresh process: status 2, one clear line, no traceback."""
    path = tmp_path / "run.yaml"
    path.write_text(BROKEN_YAML)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "repgeo", "distill", "--config", str(path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert f"config: {path}, line 4, column 2: not valid YAML" in out.stderr


def test_yaml_duplicate_key_names_both_lines(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: classification\nloss: {metric: cka}\noutput_dir: out\nloss: {alpha: 2.0}\n")
    with pytest.raises(ConfigError, match=rf"^config: {path}, line 4, column 1: not valid YAML: key 'loss' appears "
                                          r"twice \(first at line 2\)"):
        load_config(path)


def test_config_file_not_utf8(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"task: classification\n# r\xe9sum\xe9 of the run\noutput_dir: out\n")
    with pytest.raises(ConfigError, match=rf"^config: config file '{path}' is not UTF-8 text: byte 0xe9 at offset 24 "
                                          r"\(line 2\)"):
        load_config(path)


def test_config_file_missing(tmp_path, capsys):
    code, err = run_cli(["distill", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and f"config: file '{tmp_path / 'nope.yaml'}' not found" in err


# ------------------------------------------------------------------------------------------- configuration keys


def test_unknown_top_level_key_suggests_the_close_one(setup, tmp_path):
    data = _config(setup, tmp_path / "run")
    data["trainr"] = data.pop("trainer")
    with pytest.raises(ConfigError, match=r"^trainr: unknown key; did you mean 'trainer'\? expected one of task, "):
        config_from_dict(data)


def test_unknown_nested_key_from_the_command_line(setup, tmp_path, capsys):
    path = write_yaml(tmp_path / "run.yaml", _config(setup, tmp_path / "run"))
    code, err = run_cli(["distill", "--config", str(path), "loss.temperatur=3"], capsys)
    assert code == 2
    assert ("repgeo distill: configuration error: loss.temperatur: unknown key; did you mean 'temperature'? "
            "expected one of metric, alpha") in err


def test_unknown_trainer_argument(setup, tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer\.learnin_rate: not a transformers\.TrainingArguments field; "
                                          r"did you mean one of \['learning_rate'"):
        config_from_dict(_config(setup, tmp_path / "run", trainer={"learnin_rate": 1e-4}))


def test_wrong_value_type(setup, tmp_path):
    with pytest.raises(ConfigError, match=r"^loss\.alpha: expected a number, got 'high'"):
        config_from_dict(_config(setup, tmp_path / "run", loss={"alpha": "high"}))


# ------------------------------------------------------------------------------------------- metric names


def test_unknown_metric_in_config(setup, tmp_path):
    with pytest.raises(ConfigError, match=r"^loss\.metric: unknown metric 'procrustez'; available: procrustes, "
                                          r"procrustes_angular, nbs, .*, proj_mse; did you mean 'procrustes'\? "
                                          r"\(or the loss pkd\)$"):
        config_from_dict(_config(setup, tmp_path / "run", loss={"metric": "procrustez"}))


def test_unknown_metric_on_the_metrics_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(10, 4)))
    np.save(tmp_path / "b.npy", rng.normal(size=(10, 3)))
    code, err = run_cli(["metrics", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--metrics", "cka,cca"], capsys)
    assert code == 2 and "repgeo metrics: unknown metric 'cca'; available: procrustes," in err
    assert err.rstrip().endswith("proj_mse; did you mean 'cka'?")


def test_unknown_metric_in_audit():
    with pytest.raises(ValueError, match=r"^unknown metric 'CKA'; available: procrustes, .*; did you mean 'cka'\?$"):
        audit(BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)),
              BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)),
              ["a b", "c d", "e f"], metrics=["CKA"])


# ------------------------------------------------------------------------------------------- data files


def test_missing_label_column_csv(setup, tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text,sentiment\ngood film,1\nbad film,0\n")
    path = write_yaml(tmp_path / "run.yaml", _config(setup, tmp_path / "run", data={"train": str(train)}))
    code, err = run_cli(["distill", "--config", str(path)], capsys)
    assert code == 2
    assert (f"repgeo distill: data file '{train}' has no column 'label' (columns: ['text', 'sentiment']); "
            "set data.text_field / data.label_field") in err


def test_missing_text_field_in_one_jsonl_record(setup, tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [{"text": "good film", "label": 1}, {"text": "bad film", "label": 0}, {"txt": "good plot", "label": 1}]
    train.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    with pytest.raises(DataError, match=rf"^data file '{train}', record 2 \(line 4\): no field 'text' "
                                        r"\(fields: \['label', 'txt'\]\)"):
        build(setup, tmp_path, data={"train": str(train)})


def test_empty_cell_in_csv(setup, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood film,1\n,0\nNA,1\n")  # "NA" is a text; the empty cell is missing
    with pytest.raises(DataError, match=rf"^data file '{train}', record 1 \(line 3\): field 'text' is empty$"):
        build(setup, tmp_path, data={"train": str(train)})


def test_malformed_jsonl_line(setup, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "good film", "label": 1}\n{"text": "bad film" "label": 0}\n')
    with pytest.raises(DataError, match=rf"^data file '{train}', line 2: not valid JSON \(Expecting ',' delimiter\)"):
        build(setup, tmp_path, data={"train": str(train)})


@pytest.mark.parametrize(("content", "message"), [(b"", "is empty"), (b"text,label\n", "has no records")])
def test_empty_data_file(setup, tmp_path, content, message):
    train = tmp_path / "train.csv"
    train.write_bytes(content)
    with pytest.raises(DataError, match=rf"^data file '{train}' {message}$"):
        build(setup, tmp_path, data={"train": str(train)})


def test_empty_text_file_in_audit(setup, tmp_path, capsys):
    data = tmp_path / "texts.txt"
    data.write_text("\n  \n")
    code, err = run_cli(["audit", "--teacher", str(setup["teacher"]), "--student", str(setup["teacher"]),
                         "--data", str(data), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and f"repgeo audit: data file {data} holds no texts" in err


def test_non_utf8_data_file(setup, tmp_path):
    train = tmp_path / "train.csv"
    train.write_bytes("text,label\ngood film,1\ncaf\u00e9 film,0\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"^data file '{train}' is not UTF-8 text: byte 0xe9 at offset 26 \(line 3\)"):
        build(setup, tmp_path, data={"train": str(train)})


def test_non_utf8_text_file_in_audit(setup, tmp_path, capsys):
    data = tmp_path / "texts.txt"
    data.write_bytes("the film\nthe plot\nthe na\u00efve actor\n".encode("cp1252"))
    code, err = run_cli(["audit", "--teacher", str(setup["teacher"]), "--student", str(setup["teacher"]),
                         "--data", str(data), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert f"repgeo audit: data file '{data}' is not UTF-8 text: byte 0xef at offset 24 (line 3)" in err


def test_eval_label_unseen_in_training(setup, tmp_path):
    evals = tmp_path / "eval.csv"
    evals.write_text("text,label\ngood film,1\nokay film,neutral\n")
    with pytest.raises(DataError, match=rf"^data file '{evals}', record 1 \(line 3\): label 'neutral' does not occur "
                                        rf"in the training data '{setup['train']}' \(labels: \[0, 1\]\)"):
        build(setup, tmp_path, data={"eval": str(evals)})


def test_more_labels_than_the_teacher(setup, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood film,pos\nbad film,neg\nokay film,neutral\n")
    with pytest.raises(DataError, match=rf"^data file '{train}' has 3 labels \(\['neg', 'neutral', 'pos'\]\) but the "
                                        r"teacher .* has 2 \(config\.num_labels\)"):
        build(setup, tmp_path, data={"train": str(train), "eval": None})


def test_teacher_folder_missing(setup, tmp_path, capsys):
    path = write_yaml(tmp_path / "run.yaml", _config(setup, tmp_path / "run", teacher={"path": "models/bert-techer"}))
    code, err = run_cli(["distill", "--config", str(path)], capsys)
    assert code == 2
    assert ("repgeo distill: configuration error: teacher.path: 'models/bert-techer' is not a local folder") in err


# ------------------------------------------------------------------------------------------- layers


def _tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                                vocab_size=50)).eval()


def _batches() -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": torch.arange(5, 17).reshape(2, 6), "attention_mask": torch.ones(2, 6, dtype=torch.long)}]


def test_probe_layer_index_out_of_range():
    with pytest.raises(ValueError, match=r"^hidden_states index 7 out of range: this model returns 3 hidden states "
                                         r"\(valid indices -3\.\.2; 0 = embeddings, 2 = last\)"):
        collect(_tiny_bert(), _batches(), [1, 7], "mean", progress=False)


def test_probe_module_name_typo():
    with pytest.raises(ValueError, match=r"^module name 'encoder.layers.0' matches no module of BertModel\. "
                                         r"Closest names: \['encoder.layer.0'"):
        collect(_tiny_bert(), _batches(), ["encoder.layers.0"], "mean", progress=False)


def test_audit_layer_out_of_range_on_the_command_line(setup, tmp_path, capsys):
    data = tmp_path / "texts.txt"
    data.write_text("the film\nthe plot\nthe actor\nthe scene\n")
    code, err = run_cli(["audit", "--teacher", str(setup["teacher"]), "--student", str(setup["teacher"]),
                         "--data", str(data), "--teacher-layers", "2,9", "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert ("repgeo audit: --teacher-layers: hidden_states index 9 out of range: this model returns 5 hidden states "
            "(valid indices -5..4; 0 = embeddings, 4 = last)") in err
    assert not (tmp_path / "out").exists()


def test_distill_layer_map_out_of_range(setup, tmp_path):
    with pytest.raises(ConfigError, match=r"^loss\.layer_map: layer map entry '1': teacher layer 7 is out of range; "
                                          r"the teacher has hidden states 0\.\.4"):
        build(setup, tmp_path, loss={"layer_map": {1: 7}})


# ------------------------------------------------------------------------------------------- teacher and student


def test_mismatched_tokenizers(tmp_path, capsys):
    """An instruction-task student folder whose tokenizer (a different word list) is not the teacher's."""
    inst = make_toy_setup(tmp_path / "inst", "instruction", n_train=8, n_eval=4)
    other = word_tokenizer(["repeat a movie about a cat :", "the dog and the bird"], style="causal")
    student = tiny_model("opt", len(other), hidden_size=16, num_layers=2, tokenizer=other, seed=3)
    folder = tmp_path / "student"
    student.save_pretrained(folder)
    other.save_pretrained(folder)
    path = write_yaml(tmp_path / "run.yaml", _config(inst, tmp_path / "run", task="instruction",
                                                     student={"keep_every": None, "path": str(folder)}))
    code, err = run_cli(["distill", "--config", str(path)], capsys)
    assert code == 2
    n_teacher = len(AutoTokenizer.from_pretrained(inst["teacher"]).get_vocab())
    assert n_teacher != len(other)
    assert ("repgeo distill: configuration error: student.path: tokenizer mismatch: the teacher's vocabulary has "
            f"{n_teacher} entries, the student's {len(other)}") in err
    assert ("its KD term compares per-token distributions over one vocabulary, so the student must use the "
            "teacher's tokenizer") in err


def test_token_pooling_with_another_student_tokenizer(setup, tmp_path):
    """A classification student with its own tokenizer may read the text through it, but not with token-level
    features: the two tokenisations have no common token positions."""
    other = word_tokenizer(["a movie about a cat", "the dog and the bird good bad"])
    student = tiny_model("bert", len(other), hidden_size=16, num_layers=2, tokenizer=other, seed=3)
    folder = tmp_path / "student"
    student.save_pretrained(folder)
    other.save_pretrained(folder)
    with pytest.raises(ConfigError, match=r"^loss\.pooling: 'tokens' compares teacher and student features token "
                                          r"by token, but the student \(student\.path\) reads the text through its "
                                          r"own tokenizer \(tokenizer mismatch: the teacher's vocabulary has \d+ "
                                          r"entries, the student's \d+, .*\), so their tokens do not correspond; use "
                                          r"cls, mean or last"):
        build(setup, tmp_path, student={"keep_every": None, "path": str(folder)}, loss={"pooling": "tokens"})
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------- metric inputs

_rng = np.random.default_rng(0)
X, Y = _rng.normal(size=(10, 4)), _rng.normal(size=(10, 3))


def test_nan_in_metric_input():
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"^X contains NaN or Inf \(1 value\(s\); the first at row 3, column 1\)$"):
        repgeo.procrustes(Xn, Y)
    Yt = torch.tensor(Y)
    Yt[[2, 5], 0] = torch.inf
    with pytest.raises(ValueError, match=r"^Y contains NaN or Inf \(2 value\(s\); the first at row 2, column 0\)$"):
        repgeo.cka(torch.tensor(X), Yt)


def test_inf_in_a_matrix_file(tmp_path, capsys):
    Yi = Y.copy()
    Yi[7, 2] = np.inf
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Yi)
    code, err = run_cli(["metrics", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], capsys)
    assert code == 2
    assert (f"repgeo metrics: Y contains NaN or Inf (1 value(s); the first at row 7, column 2) "
            f"(X = {tmp_path / 'x.npy'}, Y = {tmp_path / 'y.npy'})") in err


def test_mismatched_row_counts():
    with pytest.raises(ValueError, match=r"^X and Y must have the same number of rows \(stimuli\); got 10 and 9$"):
        repgeo.fg(X, Y[:9])
    with pytest.raises(ValueError, match=r"^teacher and student have different numbers of rows \(stimuli\): teacher "
                                         r"\{'l3': 10\}, student \{'l1': 9\}"):
        audit_features({"l3": X}, {"l1": Y[:9]}, ["cka"], n_boot=0, n_perm=0, n_folds=0)


def test_matrix_file_missing(tmp_path, capsys):
    np.save(tmp_path / "x.npy", X)
    code, err = run_cli(["metrics", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], capsys)
    assert code == 2 and f"repgeo metrics: no such file: {tmp_path / 'y.npy'}" in err


# ------------------------------------------------------------------------------------------- resuming


def test_resume_with_a_different_config_is_refused(setup, tmp_path, capsys):
    """A real 2-step run with a checkpoint, resumed with changed settings: weight-changing keys are refused by
    name (old -> new), logging / evaluation changes are allowed."""
    out = tmp_path / "run"
    data = _config(setup, out, loss={"metric": "proj_mse"},
                   trainer={"max_steps": 2, "save_steps": 2, "eval_strategy": "no"})
    run_distillation(config_from_dict(data), verbose=False)
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    path = write_yaml(tmp_path / "run.yaml", data)

    with pytest.raises(ConfigError, match=r"^--resume: .*config\.yaml was written with a different configuration; "
                                          r"these keys change the trained weights: trainer\.learning_rate: "
                                          r"0\.002 -> 0\.001\. Resume with the saved values"):
        run_distillation(load_config(path, ["trainer.learning_rate=1e-3"]), resume=True, verbose=False)
    code, err = run_cli(["distill", "--config", str(path), "--resume", "loss.metric=cka", "seed=3"], capsys)
    assert code == 2
    assert "repgeo distill: configuration error: --resume: " in err
    assert "seed: 0 -> 3; loss.metric: 'proj_mse' -> 'cka'; trainer.seed: 0 -> 3." in err
    # what is logged, saved or evaluated may change; an explicit default equals an unset key
    ok = load_config(path, ["trainer.logging_steps=5", "geometry.enabled=true", "trainer.weight_decay=0.0"])
    result = run_distillation(ok, resume=True, verbose=False)
    assert result.trainer.state.global_step == 2 and (out / "final" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------- the command line
# One row per bad invocation of docs/bad-inputs.md ("The command line"): (id, argv, exit status, message). ``{T}`` is
# a real tiny model folder, ``{D}`` a folder of prepared files. All rows run in ONE fresh interpreter (the fixture
# below), which also records whether a model class was imported by the row: none may be, every check runs first.

CLI_ROWS = [
    ("hub-offline", ["audit", "--teacher", "no-such-org/no-such-model", "--student", "{T}", "--data", "{D}/t4.txt",
                     "--out", "{D}/o1"], 2,
     "repgeo audit: --teacher 'no-such-org/no-such-model' is not a local folder and not in the Hugging Face cache, "
     "and the hub is offline (HF_HUB_OFFLINE); download it where the hub is reachable (`hf download "
     "no-such-org/no-such-model --local-dir DIR`) and pass --teacher DIR"),
    ("hub-unreachable", ["audit", "--teacher", "{T}", "--student", "no-such-org/no-such-model", "--data",
                         "{D}/t4.txt", "--out", "{D}/o2"], 2,
     "repgeo audit: --student 'no-such-org/no-such-model' is not a local folder and the Hugging Face hub cannot be "
     "reached ("),
    ("local-missing", ["audit", "--teacher", "./nope_dir", "--student", "{T}", "--data", "{D}/t4.txt", "--out",
                       "{D}/o3"], 2,
     "repgeo audit: --teacher './nope_dir': no such local folder (resolved: "),
    ("local-typo", ["audit", "--teacher", "{D}/models/bert-techer", "--student", "{T}", "--data", "{D}/t4.txt",
                    "--out", "{D}/o4"], 2,
     "repgeo audit: --teacher '{D}/models/bert-techer': no such local folder"),
    ("empty-model-folder", ["audit", "--teacher", "{D}/models", "--student", "{T}", "--data", "{D}/t4.txt", "--out",
                            "{D}/o5"], 2,
     "repgeo audit: --teacher '{D}/models': the folder has no config.json, so it is not a transformers model folder"),
    ("model-is-a-file", ["layers", "{D}/t4.txt"], 2, "repgeo layers: model '{D}/t4.txt' is a file"),
    ("layers-missing", ["layers", "./nope_dir"], 2, "repgeo layers: model './nope_dir': no such local folder"),
    ("data-missing", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/nope.txt", "--out", "{D}/o6"],
     2, "repgeo audit: --data '{D}/nope.txt': no such file"),
    ("column-missing", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/reviews.csv",
                        "--text-column", "body", "--out", "{D}/o7"], 2,
     "repgeo audit: data file '{D}/reviews.csv' has no column 'body' (columns: ['review', 'stars']); "
     "pass --text-column"),
    ("column-ambiguous", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/two_columns.csv",
                          "--out", "{D}/o16"], 2,
     "repgeo audit: {D}/two_columns.csv: cannot tell which column holds the text among ['review', 'summary']; pass "
     "--text-column"),
    ("column-on-txt", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t4.txt", "--text-column",
                       "text", "--out", "{D}/o8"], 2,
     "repgeo audit: --text-column 'text' applies to .csv and .jsonl files; '{D}/t4.txt' is a .txt file"),
    ("too-few-texts", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t3.txt", "--out", "{D}/o9"],
     2, "repgeo audit: --data '{D}/t3.txt' holds 3 text(s); the metrics need at least 4 (one row per text)"),
    ("latin1-data", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/latin1.txt", "--out",
                     "{D}/o10"], 2,
     "repgeo audit: data file '{D}/latin1.txt' is not UTF-8 text: byte 0xe9 at offset 3 (line 1) cannot be decoded"),
    ("unknown-metric", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t4.txt", "--metrics",
                        "cka,cca", "--out", "{D}/o11"], 2,
     "repgeo audit: --metrics: unknown metric 'cca'; available: procrustes,"),
    ("layer-index", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t4.txt", "--student-layers",
                     "1,7", "--out", "{D}/o12"], 2,
     "repgeo audit: --student-layers: hidden_states index 7 out of range: this model returns 5 hidden states "
     "(valid indices -5..4; 0 = embeddings, 4 = last)"),
    ("n-perm-negative", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t4.txt", "--n-perm", "-3"],
     2, "repgeo audit: argument --n-perm: must be >= 0, got -3 (see repgeo audit --help)"),
    ("batch-size-zero", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t4.txt", "--batch-size",
                         "0"], 2, "repgeo audit: argument --batch-size: must be >= 1, got 0"),
    ("n-folds-one", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t4.txt", "--n-folds", "1",
                     "--out", "{D}/o13"], 2, "repgeo audit: --n-folds must be 0 (no intervals) or >= 2"),
    ("not-a-number", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t4.txt", "--n-perm", "many"],
     2, "repgeo audit: argument --n-perm: expected an integer, got 'many'"),
    ("out-is-a-file", ["audit", "--teacher", "{T}", "--student", "{T}", "--data", "{D}/t4.txt", "--out",
                       "{D}/t4.txt"], 2, "repgeo audit: --out '{D}/t4.txt': '{D}/t4.txt' is an existing file"),
    ("steps-negative", ["counterexamples", "--steps", "-1"], 2,
     "repgeo counterexamples: argument --steps: must be >= 0, got -1"),
    ("unknown-option", ["metrics", "{D}/x.npy", "{D}/x.npy", "--normalise", "rows"], 2,
     "repgeo: unrecognized arguments: --normalise rows (see repgeo --help)"),
    ("missing-option", ["audit", "--teacher", "{T}"], 2,
     "repgeo audit: the following arguments are required: --student, --data (see repgeo audit --help)"),
    ("metrics-twice", ["metrics", "{D}/x.npy", "{D}/y.npy", "--teacher", "{D}/x.npy"], 2,
     "repgeo metrics: the teacher file is given twice ('{D}/x.npy' and --teacher '{D}/x.npy')"),
    ("metrics-missing", ["metrics", "--teacher", "{D}/x.npy"], 2,
     "repgeo metrics: the student matrix file is missing (give TEACHER STUDENT or --teacher F --student F)"),
    ("distill-data-as-config", ["distill", "--config", "{D}/reviews.csv"], 2,
     "repgeo distill: --config '{D}/reviews.csv' looks like a data file; give the YAML run configuration (.yaml)"),
    ("distill-train-missing", ["distill", "--config", "{D}/missing_train.yaml"], 2,
     "repgeo distill: data file '{D}/nope.csv' not found"),
    ("unknown-asset", ["fetch-assets", "nope"], 2, "repgeo fetch-assets: unknown asset 'nope'; available: minilm, "),
    ("demo-data-missing", ["demo", "--fast", "--data", "{D}/nope.csv", "--out", "{D}/o14"], 2,
     "repgeo demo: --data '{D}/nope.csv': no such file"),
    ("demo-teacher-missing", ["demo", "--fast", "--teacher", "./nope_dir", "--out", "{D}/o15"], 2,
     "repgeo demo: --teacher './nope_dir': no such local folder"),
]

_ROWS_SCRIPT = """\
import contextlib, io, json, os, sys
sys.path.insert(0, {root!r})
from repgeo.cli import main
out = {{}}
for rid, argv in json.loads(sys.stdin.read()):
    if rid == "hub-offline":
        os.environ["HF_HUB_OFFLINE"] = "1"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    os.environ.pop("HF_HUB_OFFLINE", None)
    models = sorted(m for m in sys.modules if m.startswith("transformers.models.") and ".modeling_" in m
                    and not m.startswith("transformers.models.auto."))  # a model class: a model was built
    out[rid] = {{"code": code, "err": err.getvalue(), "models": models}}
print(json.dumps(out))
"""


def _fill(text: str, folders: dict[str, str]) -> str:
    return text.replace("{T}", folders["T"]).replace("{D}", folders["D"])


@pytest.fixture(scope="module")
def cli_rows(setup, tmp_path_factory):
    """Every row of CLI_ROWS run in one fresh interpreter, from a folder without ``nope_dir``; the hub is an address
    where nothing listens (an unreachable hub, without network access)."""
    d = tmp_path_factory.mktemp("cli_rows")
    (d / "t4.txt").write_text("the film\nthe plot\nthe actor\nthe scene\n")
    (d / "t3.txt").write_text("the film\nthe plot\nthe actor\n")
    (d / "latin1.txt").write_bytes("caf\u00e9 film\nthe plot\nthe actor\nthe scene\n".encode("latin-1"))
    (d / "reviews.csv").write_text("review,stars\ngood film,5\nbad film,1\nfine film,3\nthe plot,2\n")
    (d / "two_columns.csv").write_text("review,summary\ngood film,good\nbad film,bad\nfine,ok\nthe plot,plot\n")
    (d / "models").mkdir()
    write_yaml(d / "missing_train.yaml", _config(setup, d / "o17", data={"train": str(d / "nope.csv")}))
    np.save(d / "x.npy", X)
    folders = {"T": str(setup["teacher"]), "D": str(d)}
    rows = [(rid, [_fill(a, folders) for a in argv]) for rid, argv, _, _ in CLI_ROWS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", _ROWS_SCRIPT.format(root=str(REPO))], input=json.dumps(rows),
                          capture_output=True, text=True, timeout=600, cwd=d, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), folders


@pytest.mark.parametrize(("rid", "status", "message"), [(r, s, m) for r, _, s, m in CLI_ROWS],
                         ids=[r for r, *_ in CLI_ROWS])
def test_command_line_row(cli_rows, rid, status, message):
    """One line on stderr, the status, the message naming the argument; no model loaded; no output folder made."""
    results, folders = cli_rows
    result = results[rid]
    lines = result["err"].splitlines()
    assert result["code"] == status, result["err"]
    assert len(lines) == 1 and "Traceback" not in result["err"], result["err"]
    assert lines[0].startswith(_fill(message, folders)), lines[0]
    assert result["models"] == [], f"a model was loaded before the error: {result['models']}"
    argv = dict((r, a) for r, a, _, _ in CLI_ROWS)[rid]
    if "--out" in argv and argv[argv.index("--out") + 1].startswith("{D}/o"):
        assert not Path(_fill(argv[argv.index("--out") + 1], folders)).exists()
    if rid == "distill-train-missing":  # its output_dir, o17, named in the YAML
        assert not (Path(folders["D"]) / "o17").exists()


def test_every_command_line_row_is_in_the_docs():
    table = (REPO / "docs" / "bad-inputs.md").read_text()
    for rid, *_ in CLI_ROWS:
        assert f"`{rid}`" in table, rid


def test_debug_shows_the_traceback(tmp_path):
    """``--debug`` (before or after the command) lets the exception through, with its traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for argv in (["--debug", "layers", "./nope_dir"], ["layers", "./nope_dir", "--debug"]):
        done = subprocess.run([sys.executable, "-m", "repgeo", *argv], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env=env)
        assert done.returncode == 1
        assert "Traceback (most recent call last)" in done.stderr
        assert "CommandError: model './nope_dir': no such local folder" in done.stderr


def test_a_value_error_during_training_is_one_line_and_a_traceback_with_debug(setup, tmp_path, capsys):
    """A real run whose student's hidden states are all zero (its LayerNorms zeroed): the feature loss refuses the
    first batch inside ``Trainer.train``; the command says so in one line with status 2 (a traceback with
    --debug)."""
    from transformers import AutoModelForSequenceClassification

    student = AutoModelForSequenceClassification.from_pretrained(setup["teacher"])
    with torch.no_grad():
        for layer in student.base_model.encoder.layer:
            layer.output.LayerNorm.weight.zero_()
            layer.output.LayerNorm.bias.zero_()
    folder = tmp_path / "student"
    student.save_pretrained(folder)
    AutoTokenizer.from_pretrained(setup["teacher"]).save_pretrained(folder)
    data = _config(setup, tmp_path / "run", student={"keep_every": None, "path": str(folder)},
                   loss={"metric": "procrustes"}, trainer={"max_steps": 2, "eval_strategy": "no",
                                                           "save_strategy": "no"})
    path = write_yaml(tmp_path / "run.yaml", data)
    capsys.readouterr()
    code, err = run_cli(["distill", "--config", str(path), "-q"], capsys)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("repgeo distill: Y is zero after preprocessing (constant columns are zero once "
                               "centred)")
    with pytest.raises(ValueError, match="zero after preprocessing"):
        main(["distill", "--config", str(path), "-q", "--debug", "output_dir=" + str(tmp_path / "run2")])


def test_an_audit_that_fails_after_loading_the_models_leaves_no_folder(setup, tmp_path, capsys):
    """A module-name typo is only found in the model itself: the run fails after ``--out`` was created and locked,
    in one line, and removes the empty folder (and the parents it created)."""
    data = tmp_path / "texts.txt"
    data.write_text("the film\nthe plot\nthe actor\nthe scene\n")
    out = tmp_path / "new" / "out"
    code, err = run_cli(["audit", "--teacher", str(setup["teacher"]), "--student", str(setup["teacher"]), "--data",
                         str(data), "--teacher-layers", "encoder.layers.0", "--out", str(out), "-q"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("repgeo audit: module name 'encoder.layers.0' matches no module of BertModel")
    assert not (tmp_path / "new").exists()
