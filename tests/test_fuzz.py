"""Config and CLI fuzzing: malformed YAML, unknown keys, wrong types and bad paths give one-line errors.

Benchmark YAMLs go through ``registry.load_spec`` (and ``load_dataset``), probe recipes through
``probes.load_recipe``, and argument lists through ``cli.main`` with stderr captured: a user error is
always a MarbleEvalError with a one-line message (exit code 2 on the command line), never a traceback.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marble_eval.cli import main
from marble_eval.datasets.registry import load_dataset, load_spec
from marble_eval.errors import MarbleEvalError
from marble_eval.paths import benchmarks_dir, probes_dir
from marble_eval.probes import load_recipe

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=3)),
                      max_leaves=8)


def _one_line_error(call) -> str:
    """Run ``call``; it must succeed or raise MarbleEvalError whose message is one non-empty line."""
    try:
        call()
    except MarbleEvalError as exc:
        message = str(exc)
        assert message.strip() and len(message.splitlines()) == 1, repr(message)
        return message
    return ""


def _valid_benchmark() -> dict:
    return yaml.safe_load((benchmarks_dir() / "lyra.yaml").read_text())


def _valid_recipe() -> dict:
    return yaml.safe_load((probes_dir() / "mlp.yaml").read_text())


def _mutations(base: dict) -> st.SearchStrategy[dict]:
    """A valid config with one key replaced by a random value, removed, or an unknown key added."""
    keys = sorted(base)
    replace = st.tuples(st.sampled_from(keys), values).map(lambda kv: {**base, kv[0]: kv[1]})
    remove = st.sampled_from(keys).map(lambda k: {key: v for key, v in base.items() if key != k})
    unknown = st.tuples(st.text(min_size=1, max_size=12).filter(lambda k: k not in base), values).map(
        lambda kv: {**base, kv[0]: kv[1]})
    nested = st.tuples(st.sampled_from([k for k in keys if isinstance(base[k], dict)] or keys), st.text(max_size=8),
                       values).map(lambda t: {**base, t[0]: {**(base[t[0]] if isinstance(base[t[0]], dict) else {}),
                                                            t[1]: t[2]}})
    return st.one_of(replace, remove, unknown, nested)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text_as_benchmark_or_recipe_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("latin-1") if all(ord(c) < 256 for c in text) else text.encode("utf-8"))
    _one_line_error(lambda: load_spec(str(path)))
    _one_line_error(lambda: load_recipe(path))


@FUZZ
@given(config=_mutations(_valid_benchmark()))
def test_mutated_benchmark_yaml_is_valid_or_one_line(tmp_path: Path, config: dict) -> None:
    path = _write(tmp_path / "bench.yaml", yaml.safe_dump(config, allow_unicode=True))
    _one_line_error(lambda: load_dataset(str(path), data_dir=tmp_path / "audio",
                                         reference_dir=tmp_path / "no-reference"))


@FUZZ
@given(config=_mutations(_valid_recipe()))
def test_mutated_recipe_yaml_is_valid_or_one_line(tmp_path: Path, config: dict) -> None:
    path = _write(tmp_path / "recipe.yaml", yaml.safe_dump(config, allow_unicode=True))
    message = _one_line_error(lambda: load_recipe(path))
    if message:
        assert str(path) in message, message


@pytest.mark.parametrize("text, expected", [
    ("name: [unclosed", "fix the YAML syntax"),
    ("- a list\n- not a mapping\n", "expected a mapping"),
    ("name: x\nversion: '1'\ntask: multilabel\nsource: fixture\nbogus_key: 1\n", "bogus_key"),
    ("name: x\nversion: '1'\ntask: regression\nsource: fixture\n", "task"),
    ("name: x\nversion: '1'\ntask: multilabel\nsource: fixture\naudio: {window_seconds: soon}\n", "window_seconds"),
    ("\xff\xfe binary", ""),
])
def test_malformed_benchmark_yaml_examples(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "b.yaml"
    path.write_bytes(text.encode("latin-1"))
    message = _one_line_error(lambda: load_spec(str(path)))
    assert message and expected in message and str(path) in message


# -- the command line ------------------------------------------------------------------------------
def _run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    return code, err.getvalue()


COMMANDS = ["extract", "probe", "eval", "embed", "data", "datasets", "models", "leaderboard", "merge", "info"]
options = st.sampled_from(["--model", "--dataset", "--data-dir", "--cache-dir", "--seeds", "--grid", "--recipe",
                           "--window-seconds", "--max-seconds", "--precision", "--storage", "--batch-size",
                           "--num-workers", "--layer", "--lrs", "--devices", "--bogus", "-x"])
tokens = st.one_of(options, st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                                    max_size=12),
                   st.sampled_from(["-1", "0", "nan", "1e999", "/nonexistent/x.yaml", "../../etc/passwd", ""]))


@FUZZ
@given(argv=st.tuples(st.sampled_from(COMMANDS), st.lists(tokens, max_size=6)).map(lambda t: [t[0], *t[1]]))
def test_fuzzed_command_lines_fail_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    if argv[0] in ("extract", "probe", "eval", "embed"):  # never load a real model or download anything
        argv = [*argv, "--model", str(tmp_path / "no-model")]
    code, err = _run_cli(argv)
    if code != 0:
        assert code == 2, (argv, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], (argv, err)


@pytest.mark.parametrize("argv, expected", [
    (["extract", "--model", "/no/such/model", "--dataset", "SMALL", "--data-dir", "AUDIO"], "/no/such/model"),
    (["extract", "--model", "x", "--dataset", "/no/such.yaml"], "unknown dataset"),
    (["probe", "--model", "x", "--dataset", "SMALL", "--seeds", "many"], "--seeds"),
    (["probe", "--model", "x"], "--dataset"),
    (["extract", "--model", "x", "--dataset", "SMALL", "--precision", "fp8"], "--precision"),
    (["nonsense"], "invalid choice"),
])
def test_bad_arguments_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_fixture_yaml: Path,
                                tmp_path_factory: pytest.TempPathFactory, argv: list[str], expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    audio = tmp_path_factory.getbasetemp() / "tiny-fixture-audio"
    argv = [{"SMALL": str(small_fixture_yaml), "AUDIO": str(audio)}.get(arg, arg) for arg in argv]
    code, err = _run_cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


@FUZZ
@given(content=st.one_of(
    st.text(max_size=300),
    st.lists(st.tuples(st.sampled_from(["a.wav", "../x.wav", "/abs.wav", "", "b,c.wav", "ok/\u2028.wav"]),
                       st.sampled_from(["train", "valid", "test", "", "TRAIN", "x"]),
                       st.text(max_size=10)), max_size=5).map(
        lambda rows: "path,split,labels\n" + "".join(f"{p},{s},{lab}\n" for p, s, lab in rows))))
def test_fuzzed_manifest_csv_is_loaded_or_one_line(tmp_path: Path, content: str) -> None:
    (tmp_path / "m.csv").write_text(content, encoding="utf-8")
    spec = _write(tmp_path / "m.yaml", "name: fuzzed\nversion: '1'\ntask: multilabel\nsource: manifest\n"
                                      "vocabulary: {rule: all}\noptions: {manifest: m.csv}\n")
    _one_line_error(lambda: load_dataset(str(spec), data_dir=tmp_path / "audio"))
