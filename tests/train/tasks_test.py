"""Task registry and model configs: a variant name and the sizes it stands for build the same networks, so
workdirs written before configs named variants (every size spelt out) still resume and load."""

from __future__ import annotations

import threading

import pytest

from train import checkpoint, render_task, tasks, trainer
from train.configs import motion_body, motion_face, render_head512

# config.model as train/configs/motion_*.py wrote it into config.json before variants (base, then tiny).
OLD_MODELS = {
    ("motion_face", None): {
        "dit": {"num_layers": 6, "width": 512, "num_heads": 8, "mlp_ratio": 4, "audio_dim": 256,
                "time_embed_dim": 256, "p_drop": 0.1},
        "audio": {"num_layers": 2, "num_heads": 4, "mlp_ratio": 4, "num_conv": 2}, "diffusion_steps": 1000},
    ("motion_face", "tiny"): {
        "dit": {"num_layers": 2, "width": 64, "num_heads": 4, "mlp_ratio": 2, "audio_dim": 32,
                "time_embed_dim": 32, "p_drop": 0.1},
        "audio": {"num_layers": 1, "num_heads": 4, "mlp_ratio": 2, "num_conv": 2}, "diffusion_steps": 1000},
    ("motion_body", None): {
        "body": {"num_layers": 2, "width": 512, "num_heads": 8, "mlp_ratio": 4, "audio_dim": 256,
                 "app_dim": 256, "time_embed_dim": 256},
        "audio": {"num_layers": 2, "num_heads": 4, "mlp_ratio": 4, "num_conv": 2}, "diffusion_steps": 1000},
    ("motion_body", "tiny"): {
        "body": {"num_layers": 2, "width": 64, "num_heads": 4, "mlp_ratio": 2, "audio_dim": 32,
                 "app_dim": 16, "time_embed_dim": 32},
        "audio": {"num_layers": 1, "num_heads": 4, "mlp_ratio": 2, "num_conv": 2}, "diffusion_steps": 1000},
}
MODULES = {"motion_face": motion_face, "motion_body": motion_body}


def _networks(task):
  if isinstance(task, tasks.MotionFace):
    return task.dit_config, task.models.audio
  return task.body_config, task.audio, task.appearance.app_dim


@pytest.mark.parametrize("name,arg", list(OLD_MODELS), ids=lambda x: str(x))
def test_old_style_config_builds_the_same_model_and_resumes(name, arg, tmp_path):
  new = MODULES[name].get_config(arg)
  assert "variant" in new.model
  old = MODULES[name].get_config(arg)
  old.model = OLD_MODELS[name, arg]
  assert tasks.TASKS[name].resolve_model(new.model.to_dict()) == OLD_MODELS[name, arg]
  assert _networks(tasks.get_task(old)) == _networks(tasks.get_task(new))
  # A workdir started with the old config resumes with the new one (and the reverse), and a workdir's
  # config.json read back (what inference does) builds the same networks.
  checkpoint.save_config(tmp_path, old)
  trainer.check_workdir(new, tmp_path)
  assert _networks(tasks.get_task(checkpoint.load_config(tmp_path))) == _networks(tasks.get_task(new))
  checkpoint.save_config(tmp_path, new)
  trainer.check_workdir(old, tmp_path)


def test_other_variant_or_size_is_refused(tmp_path):
  checkpoint.save_config(tmp_path, motion_face.get_config())  # base
  tiny_sizes = motion_face.get_config()
  tiny_sizes.model = OLD_MODELS["motion_face", "tiny"]
  with pytest.raises(ValueError, match=r"config\.model=.*'width': 512.*'width': 64"):
    trainer.check_workdir(tiny_sizes, tmp_path)
  small = motion_face.get_config()
  small.model.variant = "small"
  with pytest.raises(ValueError, match=r"config\.model="):
    trainer.check_workdir(small, tmp_path)
  small.model.variant = "base"
  small.model.dit.p_drop = 0.2  # a field over the variant's counts too
  with pytest.raises(ValueError, match=r"config\.model="):
    trainer.check_workdir(small, tmp_path)


def test_config_is_written_whole_while_other_processes_read_it(tmp_path):
  """In a multi-process run every process checks the workdir's config.json (`trainer.check_workdir`)
  while process 0 writes it: a reader sees the old file or the new one, never a part (written in place,
  a reader on another thread saw about 1,500 partial files in 300 writes; a 2-process test run crashed
  on one)."""
  config = motion_face.get_config()
  checkpoint.save_config(tmp_path, config)
  done, errors = threading.Event(), []

  def read():
    while not done.is_set():
      try:
        trainer.check_workdir(config, tmp_path)
      except ValueError as e:  # json.JSONDecodeError is a ValueError
        errors.append(e)

  reader = threading.Thread(target=read)
  reader.start()
  try:
    for _ in range(300):
      checkpoint.save_config(tmp_path, config)
  finally:
    done.set()
    reader.join()
  assert not errors, errors[:3]
  assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.CONFIG_FILE]  # no temporary file left


def test_registry():
  assert tasks.TASKS == {"motion_face": tasks.MotionFace, "motion_lip": tasks.MotionLip,
                         "motion_body": tasks.MotionBody, "render": render_task.RenderTask}
  c = render_head512.get_config("tiny")
  assert isinstance(tasks.get_task(c), render_task.RenderTask)
  c.task = "motion_hands"
  with pytest.raises(ValueError, match="config.task='motion_hands' is not one of"):
    tasks.get_task(c)


@pytest.mark.parametrize("module,region", [("render_head512", "mouth"), ("render_upper512x768", "hand"),
                                           ("face_refine", "face")])
def test_lean_variant_is_the_full_recipe_with_the_lean_preset(module, region):
  """`:lean` trains the full-size lean layout (`presets.lean_full`) with the full config's recipe; the head's
  adds the mouth-region term, without which the small lean head showed the mouth less."""
  import importlib

  from chatanyone_jax.render import presets

  configs = importlib.import_module(f"train.configs.{module}")
  full, lean = configs.get_config(), configs.get_config("lean")
  assert presets.get(lean.model.preset) == presets.lean_full(presets.get(full.model.preset))
  assert lean.region == region
  lean.model.preset, lean.region = full.model.preset, full.region
  assert lean.to_dict() == full.to_dict()
  with pytest.raises(ValueError, match="have: lean, tiny"):
    configs.get_config("leaner")
  if module == "render_head512":  # the lean layout campaign's small baseline: small_lean_mouth's recipe
    base, lean_small = configs.get_config("small_lpmotion_mouth"), configs.get_config("small_lean_mouth")
    assert presets.lean_full(presets.get(base.model.preset)) == presets.get(lean_small.model.preset)
    base.model.preset = lean_small.model.preset
    assert base.to_dict() == lean_small.to_dict()
