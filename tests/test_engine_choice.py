"""What a run gets when it names no engine and no threads: fast where it applies, compiled for the wavenet and the
transformer where compiling pays back (and a C++ compiler is there), threads by the step's size, and every engine but
fast when the install built no C extension (no C compiler)."""
import contextlib
import io
import json
import sys

import pytest
import torch

from ninjagrad.cli import main
from ninjagrad.engines import compiled, make_engine
from ninjagrad.engines.fast import KERNEL, kernel_missing
from ninjagrad.engines.threads import ALL_CORES_FROM, StepSize, choose_threads, step_size
from ninjagrad.models import MLP, MLPConfig
from ninjagrad.train import COMPILE_PAYS_FROM, TrainConfig, default_engine, default_threads


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def small(words, out, *extra):
    return ["train", "--data", words, "--steps", 40, "--n-hidden", 16, "--out", out, "--no-progress",
            "--samples", 0, "--device", "cpu", *extra]


@pytest.fixture
def no_kernel(monkeypatch):
    """As after `CC=/bin/false pip install -e .`: the compiled step cannot be imported."""
    monkeypatch.setitem(sys.modules, KERNEL, None)


@pytest.fixture
def torch_threads_restored():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_the_lecture_mlp_defaults_to_the_fast_engine(small_words, tmp_path):
    code, out, err = cli(*small(small_words, tmp_path / "run"))
    assert code == 0, err
    assert "engine fast: the whole step in compiled C" in out and "--engine manual" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert config["engine"] == "fast" and config["threads"] >= 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["engine"] == "fast"


@pytest.mark.parametrize("settings, dp, why", [
    (dict(optimizer="adamw"), None, "sgd update, not adamw"),
    (dict(device="cuda"), None, "runs on the cpu, not cuda"),
    (dict(), object(), "data-parallel"),
    (dict(model="wavenet", device="cuda"), None, "the compiled engine's default is for the cpu, not cuda"),
    (dict(model="transformer"), object(), "the compiled engine runs one process"),
])
def test_elsewhere_the_default_is_manual_and_says_why(settings, dp, why):
    engine, note = default_engine(TrainConfig(**settings), dp)
    assert engine == "manual" and note.startswith("engine manual: ") and why in note
    assert note.count(";") == 0  # one reason: the one engine that is a default for the model


def test_without_the_extension_the_default_is_manual_and_says_how_to_get_it(no_kernel, small_words, tmp_path):
    missing = kernel_missing()
    assert "not built" in missing and "C compiler" in missing and "pip install -e ." in missing
    assert default_engine(TrainConfig()) == ("manual", f"engine manual: {missing}")
    code, out, err = cli(*small(small_words, tmp_path / "run"))
    assert code == 0, err
    assert out.count("C compiler") == 1  # said once
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["engine"] == "manual"


def test_without_the_extension_engine_fast_is_one_line_and_exit_2(no_kernel, small_words, tmp_path):
    code, out, err = cli(*small(small_words, tmp_path / "run", "--engine", "fast"))
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "--engine fast" in err and "C compiler" in err
    assert not (tmp_path / "run").exists()


def test_without_the_extension_the_other_engines_train(no_kernel, small_words, tmp_path):
    for engine in ("manual", "autograd"):
        code, _, err = cli(*small(small_words, tmp_path / engine, "--engine", engine))
        assert code == 0, err


def test_step_size_counts_the_matmuls():
    cfg = MLPConfig(vocab_size=27, block_size=3, n_embd=10, n_hidden=200)
    model = MLP.create(cfg, torch.Generator().manual_seed(0))
    X, Y = torch.randint(0, 27, (32, 3)), torch.randint(0, 27, (32,))
    assert step_size(model, X, Y) == StepSize(matmuls=2, madds=32 * (30 * 200 + 200 * 27))


def test_one_thread_below_the_threshold_every_core_from_it():
    assert choose_threads(StepSize(2, 2 * ALL_CORES_FROM - 2), 8) == 1
    assert choose_threads(StepSize(2, 2 * ALL_CORES_FROM), 8) == 8
    assert choose_threads(StepSize(10, 2 * ALL_CORES_FROM), 8) == 1  # the same work in smaller products
    assert choose_threads(StepSize(1, 10 * ALL_CORES_FROM), 1) == 1


def test_default_threads(monkeypatch):
    model = MLP.create(MLPConfig(vocab_size=27), torch.Generator().manual_seed(0))
    X, Y = torch.randint(0, 27, (100, 3)), torch.randint(0, 27, (100,))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads(model, X, Y, 32) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    n, why = default_threads(model, X, Y, 32)
    assert n == 1 and why.startswith("the forward's 2 matmuls average 0.2 M multiply-adds, under the 268 M")


def test_threads_flag_reaches_torch_and_the_checkpoint(small_words, tmp_path, torch_threads_restored):
    from ninjagrad.checkpoint import load_checkpoint

    code, out, err = cli(*small(small_words, tmp_path / "run", "--threads", 2, "--engine", "manual"))
    assert code == 0, err
    assert torch.get_num_threads() == 2
    assert load_checkpoint(tmp_path / "run")["train_config"]["threads"] == 2
    torch.set_num_threads(1)
    assert cli("train", "--resume", tmp_path / "run", "--no-progress")[0] == 0  # nothing left to do: finishes
    assert torch.get_num_threads() == 2  # the saved count, so that sums run in the same order
    assert cli(*small(small_words, tmp_path / "bad", "--threads", 0))[0] == 2


def test_make_engine_without_the_extension(no_kernel):
    from ninjagrad.errors import UsageError

    model = MLP.create(MLPConfig(vocab_size=5, n_hidden=8), torch.Generator().manual_seed(0))
    X, Y = torch.zeros((4, 3), dtype=torch.long), torch.zeros(4, dtype=torch.long)
    with pytest.raises(UsageError, match="C compiler"):
        make_engine("fast", model, X, Y)
    make_engine("manual", model, X, Y)


# --- the compiled engine: the default for the wavenet and the transformer on the cpu, where it pays ---------

@pytest.fixture
def cxx(tmp_path, monkeypatch):
    """A C++ compiler on PATH under the name inductor calls when CXX is unset (a script: nothing here compiles)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    compiler = folder / ("clang++" if sys.platform == "darwin" else "g++")
    compiler.write_text("#!/bin/sh\nexit 0\n")
    compiler.chmod(0o755)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(folder))


@pytest.fixture
def no_cxx(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")


@pytest.fixture
def eager_graphs(monkeypatch):
    """The compiled engine's graphs run as traced functions, eagerly: its choices and files without inductor's
    tens of seconds of compiling."""
    monkeypatch.setattr(compiled, "compile_graph", lambda fn, example_inputs: fn)


def wavenet(words, out, *extra):
    return small(words, out, "--model", "wavenet", "--n-embd", 4, "--n-hidden", 12, "--block-size", 8, *extra)


@pytest.mark.parametrize("model", ["wavenet", "transformer"])
def test_a_long_run_on_the_cpu_defaults_to_the_compiled_engine(cxx, model):
    engine, note = default_engine(TrainConfig(model=model, steps=COMPILE_PAYS_FROM[model]))
    assert engine == "compiled", note
    assert note.startswith("engine compiled: ") and "inductor" in note and "--engine manual" in note


@pytest.mark.parametrize("model", ["wavenet", "transformer"])
def test_a_short_run_is_manual_because_compiling_would_not_pay_back(cxx, model):
    least = COMPILE_PAYS_FROM[model]
    engine, note = default_engine(TrainConfig(model=model, steps=least - 1))
    assert engine == "manual"
    assert note == (f"engine manual: compiling the {model}'s step (up to a minute) pays back from {least:,} steps, "
                    f"and this run has {least - 1:,} (--engine compiled compiles anyway)")


def test_without_a_cxx_compiler_the_default_is_manual_and_says_so(no_cxx):
    engine, note = default_engine(TrainConfig(model="wavenet", steps=10**6))
    assert engine == "manual"
    assert note == "engine manual: the compiled engine needs a C++ compiler, and no-such-c++-compiler is not on PATH"


def test_before_torch_2_6_the_default_is_manual_and_says_so(cxx, monkeypatch):
    monkeypatch.setattr(torch, "__version__", torch.torch_version.TorchVersion("2.5.1"))
    engine, note = default_engine(TrainConfig(model="transformer", steps=10**6))
    assert engine == "manual" and "torch 2.6 or later" in note and "2.5.1" in note


def test_the_mlp_defaults_to_fast_however_long_the_run():
    if kernel_missing():
        pytest.skip("the fast engine's C extension is not built here")
    for steps in (1, 10**6):
        assert default_engine(TrainConfig(steps=steps))[0] == "fast"


def test_a_short_wavenet_run_says_why_it_is_manual(cxx, small_words, tmp_path):
    code, out, err = cli(*wavenet(small_words, tmp_path / "run"))
    assert code == 0, err
    assert "engine manual: compiling the wavenet's step" in out and "pays back from 30,000 steps" in out
    assert "compiling the step" not in out.replace("compiling the wavenet's step", "")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["engine"] == "manual" and "compile_seconds" not in summary


def test_a_wavenet_run_that_pays_back_compiles_and_says_so(cxx, eager_graphs, small_words, tmp_path, monkeypatch):
    monkeypatch.setitem(COMPILE_PAYS_FROM, "wavenet", 40)  # the run's 40 steps pay back
    code, out, err = cli(*wavenet(small_words, tmp_path / "run"))
    assert code == 0, err
    assert "engine compiled: forward, hand-written backward and update compiled by inductor" in out
    assert out.index("engine compiled") < out.index("compiling the step (tens of seconds")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["engine"] == "compiled"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["engine"] == "compiled" and set(summary["compile_seconds"]) == {"step"}
    assert summary["compile_seconds"]["step"] >= 0


def test_engine_compiled_without_a_cxx_compiler_is_one_line_and_exit_2(no_cxx, small_words, tmp_path):
    code, out, err = cli(*wavenet(small_words, tmp_path / "run", "--engine", "compiled"))
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.strip() == ("ninjagrad: --engine compiled: the compiled engine needs a C++ compiler, and "
                           "no-such-c++-compiler is not on PATH; use --engine manual")  # said before inductor runs
    assert not (tmp_path / "run").exists()


def test_resuming_a_compiled_run_without_a_cxx_compiler_is_one_line_and_exit_2(eager_graphs, small_words,
                                                                                   tmp_path, monkeypatch):
    out = tmp_path / "run"
    code, _, err = cli(*wavenet(small_words, out, "--engine", "compiled"))
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    code, _, err = cli("train", "--resume", out, "--no-progress")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "C++ compiler, and no-such-c++-compiler is not on PATH" in err and str(out) in err
    assert "its resume needs it too" in err and "use --engine manual" not in err  # --resume takes no --engine
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
