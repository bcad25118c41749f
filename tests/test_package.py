import shutil
import subprocess
import sys

import pytest

BLOCK_OPTIONAL = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {'onnxruntime', 'ctranslate2', 'gradio', 'onnx', 'onnxscript'}:
            raise ImportError('blocked optional dependency ' + name)
sys.meta_path.insert(0, Block())
"""


def test_import_needs_only_core_dependencies():
    code = BLOCK_OPTIONAL + """
import automoe, automoe.modeling, automoe.supernet, automoe.extract, automoe.generate, automoe.cli
from automoe import MoETransformer, SuperTransformer, extract_subnet
heavy = [m for m in ('onnxruntime', 'ctranslate2', 'gradio') if m in sys.modules]
assert not heavy, heavy
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def _cli(*args):
    exe = shutil.which("automoe")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "automoe", *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_cli_help_and_version():
    import automoe

    out = _cli("--help")
    assert out.returncode == 0 and "usage: automoe" in out.stdout
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"automoe {automoe.__version__}"


@pytest.mark.parametrize("verb", [["info"], ["data", "build"], ["train", "supernet"], ["train", "model"],
                                  ["eval"], ["translate"], ["export"], ["serve"],
                                  ["push"], ["pull"], ["search", "latency-table"], ["search", "fit-predictor"],
                                  ["search", "run"], ["extract"]])
def test_every_verb_has_help(verb):
    out = _cli(*verb, "--help")
    assert out.returncode == 0 and f"usage: automoe {' '.join(verb)}" in out.stdout


@pytest.mark.parametrize("arch", ["dense", "smallest"])
def test_cli_info_prints_summary(arch):
    out = _cli("info", "--space", "tiny", "--arch", arch)
    assert out.returncode == 0, out.stderr
    assert "parameters" in out.stdout and "forward pass" in out.stdout


def test_cli_bad_arch_is_a_clear_error():
    out = _cli("info", "--arch", "no-such.json")
    assert out.returncode == 2 and "no such JSON file" in out.stderr
