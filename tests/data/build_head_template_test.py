"""End to end: the template-building CLI on two short real clips."""

from __future__ import annotations

import numpy as np

from chatanyone_jax import template as ht
from data import build_head_template as cli
from tests.helpers import media_dir, require


def test_cli_builds_a_loadable_template(tmp_path):
  videos = media_dir() / "videos"
  train = [require(videos / n, "shared clip") for n in ("LivePortrait__assets_examples_driving_d0.mp4",
                                                        "LivePortrait__assets_examples_driving_d18.mp4")]
  held = require(videos / "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0.mp4", "shared clip")
  out = tmp_path / "tmpl.npz"
  rc = cli.main(["--videos", *map(str, train), "--out", str(out), "--max-frames", "40", "--num-exp", "16",
                 "--heldout", str(held)])
  assert rc == 0 and out.is_file()
  with np.load(out) as z:
    tmpl = ht.template_from_arrays(z)
    assert z["clips"].tolist() == [p.name for p in train]
    err = float(z["heldout_error_px"][0])
  assert tmpl.exp_basis.shape == (16, 478, 3) and tmpl.id_basis.shape == (1, 478, 3)
  # Built from 80 frames of two people, the template still fits an unseen face better than a rigid
  # shape does (5.0 px on this clip; the shipped template: 0.35 px; measured 3.3 px here).
  assert 0 < err < 4.0
