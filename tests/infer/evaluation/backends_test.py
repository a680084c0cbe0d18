"""Where the metric networks' weight files are found, and which back-ends load from a weights folder."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from chatanyone_jax.eval import lpips
from infer.evaluation import backends
from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict


def test_find_weights_file_prefers_explicit_then_published_name_then_conversions(tmp_path):
  find = lambda explicit=None, d=tmp_path: backends.find_weights_file(explicit, d, ["a.pth", "b.pt"], "Net")
  assert find() is None and find(d=None) is None
  (tmp_path / "b.safetensors").write_bytes(b"")
  assert find() == tmp_path / "b.safetensors"  # a conversion of the second published name
  (tmp_path / "a.npz").write_bytes(b"")
  assert find() == tmp_path / "a.npz"  # names in order; .npz before .safetensors
  (tmp_path / "a.pth").write_bytes(b"")
  assert find() == tmp_path / "a.pth"  # the published file itself first
  (tmp_path / "mine.bin").write_bytes(b"")
  assert find(tmp_path / "mine.bin") == tmp_path / "mine.bin"  # an explicit file wins, any name
  with pytest.raises(FileNotFoundError, match=r"Net weights .*nope\.pth do not exist"):
    find(tmp_path / "nope.pth")


def test_load_backends_from_a_folder_with_only_lpips(tmp_path):
  backbone_shapes, lin_shapes = lpips.expected_keys("alex")
  backbone = seeded_state_dict(backbone_shapes, 1)
  lin = {k: np.abs(v) for k, v in seeded_state_dict(lin_shapes, 2).items()}
  np.savez(tmp_path / "alexnet-owt-7be5be79.npz", **backbone)
  save_file(lin, tmp_path / "alex.safetensors")
  b = backends.load_backends(tmp_path, faces=False, hands=False)
  assert b.files == {"lpips_backbone": str(tmp_path / "alexnet-owt-7be5be79.npz"),
                     "lpips_lin": str(tmp_path / "alex.safetensors")}
  assert set(b.missing) == {"FID", "FVD", "Sync"} and b.missing["Sync"] == "syncnet_v2.model not given"
  assert b.inception is b.i3d is b.syncnet is b.faces is b.hands is None
  x, y = seeded_input((2, 40, 40, 3), 3), seeded_input((2, 40, 40, 3), 4)
  np.testing.assert_allclose(b.lpips(x, y), lpips.LPIPS.from_state_dicts(backbone, lin)(x, y), rtol=1e-6)
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    backends.load_backends(tmp_path / "alex.npz", faces=False, hands=False)
