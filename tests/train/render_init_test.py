"""`--config.init_from`: a converted LivePortrait checkpoint initialises the renderer's generator."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.train.convert_test import _fake_weights
from train import convert, parallel, render_task, tasks, trainer
from train.configs import render_head512

DEVICE = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _task(init_from):
  c = render_head512.get_config("tiny")
  c.update(data_dir="unused", init_from=str(init_from))
  c.model.preset = "reference_reduced"  # the preset of the reduced PyTorch reference weights
  return c, tasks.get_task(c)


def _state(c, task):
  prog = trainer.build(task, c, parallel.make_mesh(c.mesh))  # the trainer's init
  return prog.compile_init()(prog.init_key, {})


def test_init_from_converted_liveportrait_copies_every_generator_array(tmp_path, load_ref):
  ckpt = tmp_path / "ckpt"
  weights = _fake_weights(tmp_path, load_ref)
  assert convert.main(["liveportrait", "--weights", str(weights), "--out", str(ckpt),
                       "--preset", "reference_reduced"]) == 0
  tree = convert.load_liveportrait_checkpoint(ckpt)
  c, task = _task(ckpt)
  state = _state(c, task)
  before = jax.device_get(state)
  new = jax.device_get(task.initial_params(state, DEVICE))
  for name, part in render_task.LIVEPORTRAIT_PARTS.items():
    for coll in ("params", "batch_stats"):
      if not tree[name].get(coll):
        continue
      jax.tree.map(np.testing.assert_array_equal, new["gen"][coll][part], tree[name][coll])
    jax.tree.map(np.testing.assert_array_equal, new["ema"][part], tree[name]["params"])
  # The random init really was replaced, and the discriminator and optimiser state were left alone.
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), before["gen"]["params"],
                                         new["gen"]["params"]))
  assert np.mean(changed) > 0.9
  jax.tree.map(np.testing.assert_array_equal, new["disc"], before["disc"])
  jax.tree.map(np.testing.assert_array_equal, new["gen"]["opt_state"], before["gen"]["opt_state"])


def test_init_from_wrong_folder_is_a_clear_error(tmp_path):
  _, task = _task(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="nothing.*python -m train.convert liveportrait"):
    task.initial_params({}, DEVICE)  # fails on the folder, before touching the state


def test_init_from_a_checkpoint_with_unknown_networks_is_a_clear_error(tmp_path):
  tree = {"not_a_network": {"params": {"w": np.ones(2)}}}
  ckpt = convert.save_liveportrait_checkpoint(tmp_path / "odd", tree, {"source": "test"})
  _, task = _task(ckpt)
  with pytest.raises(ValueError, match="unexpected networks.*not_a_network"):
    task.initial_params({}, DEVICE)


def test_merge_matching_copies_only_equal_names_and_shapes():
  target = {"a": {"w": np.zeros((2, 3))}, "b": np.zeros(4), "c": np.zeros(2)}
  source = {"a": {"w": np.ones((2, 3))}, "b": np.ones(5), "d": np.ones(2)}
  merged, copied, kept = render_task.merge_matching(target, source)
  assert (copied, kept) == (1, 2)
  np.testing.assert_array_equal(merged["a"]["w"], 1)
  np.testing.assert_array_equal(merged["b"], 0)
  np.testing.assert_array_equal(merged["c"], 0)


def test_init_from_a_renderer_export_warm_starts_the_face_refine(tmp_path):
  # The bundled head renderer (small_head_skip_lean) into small_face_refine_skip_lean: F, M and W have the
  # same networks, G all but the refine's injection branch, which keeps its init.
  from train import export
  from train.configs import face_refine

  c = face_refine.get_config("small_lean")
  c.update(data_dir="unused", init_from="infer/assets/checkpoint/render_head")
  task = tasks.get_task(c)
  shapes = export.expected_shapes(c)
  gen = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), shapes)
  fresh = {"gen": gen, "ema": gen["params"], "disc": {}}
  with pytest.raises(ValueError, match="pass load_weights"):
    task.initial_params(fresh, DEVICE)
  state = task.initial_params(fresh, DEVICE, load_weights=export.load_weights)
  # The EMA is a copy, not the same buffers: the train step donates both (donating one buffer twice fails).
  pointers = lambda t: {x.unsafe_buffer_pointer() for x in jax.tree.leaves(t)}
  assert not pointers(state["ema"]) & pointers(state["gen"]["params"])
  new = jax.device_get(state)
  head = export.load_weights(c.init_from)
  for part in ("F", "M", "W"):
    for coll in ("params", "batch_stats"):
      jax.tree.map(np.testing.assert_array_equal, new["gen"][coll][part], head[coll][part])
    jax.tree.map(np.testing.assert_array_equal, new["ema"][part], head["params"][part])
  g = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(new["gen"]["params"]["G"])}
  g_head = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(head["params"]["G"])}
  shared = [k for k in g if k in g_head]
  assert shared and len(shared) < len(g)
  for k in g:
    np.testing.assert_array_equal(g[k], g_head[k] if k in shared else 7.0, err_msg=k)
