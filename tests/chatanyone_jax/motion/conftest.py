"""Shared tiny FaceMotionDiT for the motion tests: initialised once (init compiles slowly on CPU)."""

import jax
import numpy as np
import pytest

from chatanyone_jax.motion.face_motion_dit import FaceMotionConfig, FaceMotionDiT

REF_LEN = 8


def perturb(params, scale: float = 0.2, seed: int = 0):
  """Replaces every all-zero leaf (AdaLN-Zero projections, final layer, biases) by small noise,
  so every branch is active; host-side numpy, no compilation."""
  rs = np.random.RandomState(seed)
  def f(p):
    p = np.asarray(p)
    return rs.normal(0.0, scale, p.shape).astype(p.dtype) if not np.any(p) else p
  return jax.tree.map(f, params)


@pytest.fixture(scope="session")
def face_model():
  return FaceMotionDiT(FaceMotionConfig.tiny())


@pytest.fixture(scope="session")
def face_params(face_model):
  """Tiny params at init, reference branch included."""
  return jax.jit(face_model.init_params, static_argnums=(1, 2))(jax.random.key(0), 2, REF_LEN)


@pytest.fixture(scope="session")
def face_params_perturbed(face_params):
  return perturb(face_params)
