"""The summary and exit codes: every way a run ends says what happened, also as JSON."""

import json
import signal
import subprocess
import sys
import time

from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from tests.conftest import gradient_rgb, photo_folder


def run(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_pixbatch_json_environment_variable(tmp_path, tiny_checkpoint):
    Image.fromarray(gradient_rgb(8, 8)).save(tmp_path / "a.png")
    code, stdout, _ = run("--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "out", "--model",
                          tiny_checkpoint, env={"PIXBATCH_JSON": "1"})
    assert code == 0 and json.loads(stdout)["done"] == 1


def test_start_errors_are_json_too(tmp_path):
    Image.fromarray(gradient_rgb(8, 8)).save(tmp_path / "a.png")
    code, stdout, stderr = run("--json", "upscale", tmp_path / "a.png", tmp_path / "out", "--model", "nope_x4")
    assert code == 1 and stderr.startswith("error: unknown model 'nope_x4'")
    assert json.loads(stdout) == {"error": stderr[len("error: "):].strip(), "exit_code": 1}


def test_no_existing_input_is_a_start_error_that_creates_nothing(tmp_path):
    for command in ("upscale", "segment"):
        code, stdout, stderr = run(command, tmp_path / "nonexistent", tmp_path / "out")
        assert code == 1 and stdout == ""
        assert stderr == f"error: no such file or folder: {tmp_path / 'nonexistent'}\n"
        assert not (tmp_path / "out").exists()


def test_an_interrupted_run_prints_its_partial_summary(tmp_path, tiny_checkpoint):
    src = photo_folder(tmp_path / "in", 24, 160, name="{i:02d}.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pixbatch", "--device", "cpu", "--json", "upscale", str(src),
                             str(out), "--model", str(tiny_checkpoint), "--png-compression", "9", "--workers", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as a terminal's foreground job gets it: a suite run as a background job (`cmd &`
                            # without job control) hands its children SIGINT ignored, and Ctrl-C never arrives
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out.exists() and any(p.suffix == ".png" for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True
    written = len([p for p in out.iterdir() if p.suffix == ".png"])
    assert summary["done"] == written and 0 < written < 24


def _modules_after(*argv):
    """Which heavy modules a command imports (in a fresh interpreter)."""
    code = ("import sys\nfrom pixbatch.cli import main\nsys.argv = ['pixbatch', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('torch', 'torch._dynamo', 'torchvision', 'spandrel') if m in sys.modules], "
            "file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=120)
    return proc.stderr.strip().splitlines()[-1]


def test_start_up_imports_only_what_the_command_needs(tmp_path):
    assert _modules_after("--help") == "[]"
    assert _modules_after("upscale", tmp_path / "nonexistent", tmp_path / "out") == "[]"  # an instant error
    assert _modules_after("upscale", "--tile", "-5", tmp_path, tmp_path / "out") == "[]"  # a usage error
    # spandrel (~4 s) only for foreign checkpoints; torch._dynamo and torchvision (~1.5 s each) not at all
    assert _modules_after("models") == "['torch']"


def test_library_warnings_show_only_with_verbose_and_pixbatchs_own_always(capsys, monkeypatch):
    """`pixbatch bench` printed torch's jit.trace FutureWarnings (OpenVINO traces the model): a library's
    warning is one `note:` line with -v and nothing without; pixbatch's own is one `warning:` line."""
    import warnings

    import pixbatch.runtime.openvino_backend as own
    from pixbatch.cli import show_warning
    from pixbatch.cli.report import App

    monkeypatch.setattr(warnings, "showwarning", show_warning)
    for verbosity, expected in ((0, ""), (1, "note: FutureWarning from /site/torch/jit/_trace.py:9: traced\n")):
        monkeypatch.setattr(App, "current", App(verbosity=verbosity))
        warnings.warn_explicit("traced", FutureWarning, "/site/torch/jit/_trace.py", 9)
        warnings.warn_explicit("OpenVINO cannot convert this model\n(details)", UserWarning, own.__file__, 117)
        assert capsys.readouterr().err == expected + "warning: OpenVINO cannot convert this model\\n(details)\n"
