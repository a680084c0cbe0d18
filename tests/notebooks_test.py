"""notebooks/*.ipynb: committed without outputs, and executed top to bottom on CPU with tiny parameters.

Each notebook's "parameters" cell is replaced by CI values that reuse the session's `demo_run` (the
preprocessed bundled clip and four tiny trained workdirs, conftest) and shrink the work to a few steps
and frames; the notebook's cells then run top to bottom in IPython's shell in this test process (a fresh
namespace, the repository as working directory; `_run_cells`), with its environment (JAX_PLATFORMS=cpu and
the test's JAX_COMPILATION_CACHE_DIR from conftest) and the programs the demo fixture compiled.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import os
import pathlib
import re
import sys

import nbformat
import numpy as np
import pytest
from IPython.core.displayhook import DisplayHook
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("quickstart", "training", "evaluate")


def _load(name: str) -> nbformat.NotebookNode:
  return nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)


def _parameter_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
  return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


# ------------------------------------------------------------------------------------------ fast checks


def test_every_notebook_is_listed():
  assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs_and_one_parameters_cell(name):
  nb = _load(name)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}: strip the outputs"
  params = _parameter_cells(nb)
  assert len(params) == 1 and params[0].cell_type == "code", f"{name}: want exactly one 'parameters' cell"
  # The order the notebooks promise: explanation, then the install cell, then the parameters.
  assert nb.cells[0].cell_type == "markdown" and "Open in Colab" in nb.cells[0].source
  assert nb.cells[1] is code[0] and nb.cells[2] is params[0]
  assert code[0].source.count("REPO_URL") >= 2 and '".[cuda12]"' in code[0].source
  # Only public names of the package: no `module._private` attribute and no `import _private`.
  for c in code:
    private = re.findall(r"\w\._(?!_)\w+|import _\w+|from \S+ import .*\b_\w+", c.source)
    assert not private, f"{name}: private names {private}"


def _assigned(source: str) -> set[str]:
  return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets
          if isinstance(t, ast.Name)}


@pytest.mark.parametrize("name", NAMES)
def test_ci_parameters_set_every_knob(name):
  """A knob added to a notebook must get a CI value too (else CI silently runs its full-size default)."""
  default = _assigned(_parameter_cells(_load(name))[0].source)
  assert _assigned(_ci_parameters(name, pathlib.Path("demo"), pathlib.Path("out"))) == default


# ----------------------------------------------------------------------------------------- execution


def _ci_parameters(name: str, demo_run: pathlib.Path, out: pathlib.Path) -> str:
  """The CI values of each notebook's parameters cell: the demo's records and runs, a few steps and
  frames. Steps (2 / 3) and DDIM steps (2) equal conftest.DEMO_ARGS, so the train and stream steps are
  the programs the demo compiled (JAX's persistent cache)."""
  common = f"OUT = {str(out)!r}\nSEED = 0\n"
  if name == "quickstart":
    return common + (f"CHECKPOINT = {str(demo_run / 'runs')!r}\nCLIP_SECONDS = 2.0\nSTEPS_RENDER = 2\n"
                     "STEPS_MOTION = 3\nSECONDS = 0.5\nSTYLE_SECONDS = 0.5\nSTYLE_VALUES = (1.0, 2.0)\n"
                     "REFERENCE_SECONDS = 1.0\nDDIM_STEPS = 2\nCLIP_X0 = 3.0\n")
  if name == "training":
    return common + (f"DATA = {str(demo_run / 'data')!r}\nCLIP_SECONDS = 2.0\nSTEPS_RENDER = 2\n"
                     "STEPS_MOTION = 3\nTRAIN_FACE_REFINE = False\nBATCH = 4\nSHOW = 1\n")
  return common + (f"CHECKPOINT = {str(demo_run / 'runs')!r}\nDATA = {str(demo_run / 'data')!r}\n"
                   "SPLIT = 'train'\nWEIGHTS_DIR = None\nTABLES = ['1', '3', '4']\nMAX_CLIPS = 1\n"
                   "MAX_FRAMES = 16\nDDIM_STEPS = 2\nSHOW_FRAMES = 2\nQUICKSTART = 'unused'\n"
                   "CLIP_SECONDS = 2.0\nSTEPS_RENDER = 2\nSTEPS_MOTION = 3\n")


def _execute(name: str, demo_run: pathlib.Path, out: pathlib.Path) -> nbformat.NotebookNode:
  """Runs the notebook's code cells top to bottom in this process's IPython shell (`_run_cells`), with its
  parameters cell replaced by `_ci_parameters`; returns the notebook with every cell's outputs."""
  assert os.environ.get("JAX_PLATFORMS") == "cpu" and os.environ.get("JAX_COMPILATION_CACHE_DIR")
  nb = _load(name)
  _parameter_cells(nb)[0].source = _ci_parameters(name, demo_run, out)
  # Appended check: the cells ran with the tests' CPU / compilation-cache settings, and compiled as the
  # demo fixture did (without most XLA optimisations, as every test process: tests/conftest.py).
  nb.cells.append(nbformat.v4.new_code_cell(
      "import os\nimport jax\nprint('SETTINGS', os.environ.get('JAX_PLATFORMS'), "
      "os.environ.get('JAX_COMPILATION_CACHE_DIR'), jax.config.read('jax_disable_most_optimizations'))"))
  main = sys.modules["__main__"]
  with contextlib.chdir(REPO):  # where a kernel started from the repository (as README says) would be
    _run_cells(nb)
  assert sys.modules["__main__"] is main  # later tests of this process spawn processes from it
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert not errors, errors
  assert f"SETTINGS cpu {os.environ['JAX_COMPILATION_CACHE_DIR']} True" in _text(nb)
  return nb


def _mime_bundle(data: dict) -> dict:
  """IPython's formatted outputs as a notebook stores them: binary formats (images) base64-encoded."""
  return {k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v for k, v in data.items()}


class _ResultHook(DisplayHook):
  """The shell's display hook, collecting a cell's value as a notebook "execute_result" in every format
  IPython renders (a kernel sends all of them; the terminal hook prints only text)."""

  def __init__(self, shell):
    super().__init__(shell=shell)
    self.outputs: list = []

  def write_output_prompt(self):
    pass

  def write_format_data(self, format_dict, md_dict=None):
    self.outputs.append(nbformat.v4.new_output("execute_result", data=_mime_bundle(format_dict),
                                               metadata=md_dict or {}, execution_count=self.prompt_count))

  def finish_displayhook(self):
    pass


def _run_cells(nb: nbformat.NotebookNode) -> None:
  """Executes `nb`'s code cells in order in IPython's shell in this process (what a Jupyter kernel runs,
  without starting one: this process already holds the programs the demo fixture compiled, which a new
  kernel would trace and load again; the three notebooks: 98 s in kernels, 53 s here) and stores each
  cell's outputs (stdout / stderr streams, displays, its value, an error) in the cell, as nbclient does.
  Stops at the first cell that raises. The shell's module is `__main__` while the cells run (as in a
  kernel); the process's own comes back afterwards (multiprocessing's spawn, in later tests of this
  worker, reads `__main__.__spec__`, which IPython's module lacks)."""
  main = sys.modules["__main__"]
  shell = InteractiveShell.instance(config=Config({"HistoryManager": {"enabled": False}}))  # no ~/.ipython db
  sys.modules["__main__"] = shell.user_module
  hook = _ResultHook(shell)
  old_hook, old_trap = shell.displayhook, shell.display_trap.hook
  shell.displayhook = shell.display_trap.hook = hook
  shell.user_ns.clear()
  shell.init_user_ns()
  try:
    for cell in nb.cells:
      if cell.cell_type != "code":
        continue
      hook.outputs = []
      with capture_output() as cap:
        result = shell.run_cell(cell.source, store_history=False)
      outputs = [nbformat.v4.new_output("stream", name=n, text=t)
                 for n, t in (("stdout", cap.stdout), ("stderr", cap.stderr)) if t]
      outputs += [nbformat.v4.new_output("display_data", data=_mime_bundle(o.data), metadata=o.metadata or {})
                  for o in cap.outputs]
      outputs += hook.outputs
      error = result.error_before_exec or result.error_in_exec
      if error is not None:
        outputs.append(nbformat.v4.new_output("error", ename=type(error).__name__, evalue=str(error),
                                              traceback=[cap.stdout[-4000:], cap.stderr[-4000:]]))
      cell.outputs = outputs
      if error is not None:
        break
  finally:
    shell.displayhook, shell.display_trap.hook = old_hook, old_trap
    sys.modules["__main__"] = main


def _text(nb: nbformat.NotebookNode) -> str:
  """All stream / text / markdown outputs of the notebook, joined."""
  parts = []
  for c in nb.cells:
    for o in c.get("outputs", []):
      if o.output_type == "stream":
        parts.append(o.text)
      elif o.output_type in ("display_data", "execute_result"):
        parts.extend(str(o.data.get(k, "")) for k in ("text/plain", "text/markdown"))
  return "\n".join(parts)


def _mime_outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
  return [o.data[mime] for c in nb.cells for o in c.get("outputs", [])
          if o.output_type in ("display_data", "execute_result") and mime in o.data]


def _frames(path: pathlib.Path) -> tuple[np.ndarray, float]:
  from data import media

  frames, fps = media.read_video(path)
  assert media.read_audio(path).size > 0, f"{path} has no audio"
  return frames, fps


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_quickstart_executes(demo_run, tmp_path):
  nb = _execute("quickstart", demo_run, tmp_path)
  frames, fps = _frames(tmp_path / "quickstart.mp4")
  assert fps == 30 and len(frames) == 15  # SECONDS = 0.5 of speech at 30 fps
  h, w = frames.shape[1:3]
  for knob in ("amplitude", "pose_range"):  # STYLE_VALUES: two labelled panels, 2x upscaled, side by side
    grid, _ = _frames(tmp_path / f"{knob}.mp4")
    assert grid.shape[1:3] == (2 * h, 2 * 2 * w) and len(grid) == 15
  grid, _ = _frames(tmp_path / "style_transfer.mp4")
  assert grid.shape[1:3] == (2 * h, 3 * 2 * w)
  assert (tmp_path / "reference.mp4").is_file()
  videos = _mime_outputs(nb, "text/html")
  assert len([v for v in videos if "data:video/mp4;base64," in v]) == 4  # main, two style rows, transfer
  assert len(_mime_outputs(nb, "image/png")) >= 2  # portrait, contact sheet
  text = _text(nb)
  assert "amplitude: mean |frame change|" in text and "pose_range: mean |frame change|" in text


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_training_executes(demo_run, tmp_path):
  from train import checkpoint

  nb = _execute("training", demo_run, tmp_path)
  runs = tmp_path / "runs"
  for name, steps in (("render", 2), ("motion_face", 3), ("motion_body", 3)):
    assert checkpoint.load_params(runs / name)["step"] == steps
    assert list((runs / name / "tensorboard").glob("events.*"))
  assert not (runs / "face_refine").exists()
  text = _text(nb)
  assert "L1 to the driving frame: before" in text and "(step 2)" in text
  assert f"tensorboard --logdir {runs.absolute()}" in text
  assert len(_mime_outputs(nb, "image/png")) >= 4  # batch, template fit, losses, reconstructions


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_evaluate_executes(demo_run, tmp_path):
  nb = _execute("evaluate", demo_run, tmp_path)
  markdown = "\n".join(_mime_outputs(nb, "text/markdown"))
  for title in ("Table 1: self-driven reenactment", "Table 3: audio-driven", "Table 4: style transfer"):
    assert title in markdown
  assert "n/a (no weights)" in markdown
  assert (tmp_path / "eval.md").read_text().strip() in markdown
  frames, _ = _frames(tmp_path / "compare.mp4")
  assert len(frames) == 16  # MAX_FRAMES
  assert len(_mime_outputs(nb, "image/png")) >= 1
