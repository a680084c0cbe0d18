"""Bilinear / trilinear `grid_sample` with PyTorch semantics, channels-last.

The renderer warps a (B, D, H, W, C) appearance volume with a dense 3-D flow
field once per frame (LivePortrait's warping network, paper Eq. 4), so this is
the hottest op of stage 2. The primal is 2^n per-corner row gathers that XLA
fuses into one loop; a `custom_jvp` makes reverse mode one scatter-add.

Semantics follow `torch.nn.functional.grid_sample(mode="bilinear",
padding_mode="zeros")`:
  * grid coordinates lie in [-1, 1], last axis ordered (x, y[, z]) indexing
    (W, H[, D]);
  * align_corners=False: ix = ((x + 1) * W - 1) / 2,
    align_corners=True:  ix = (x + 1) / 2 * (W - 1);
  * corners outside the input contribute zero.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def _unnormalize(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
  # Same operation order as ATen's grid_sampler_unnormalize, for bit parity.
  if align_corners:
    return (coord + 1) / 2 * (size - 1)
  return ((coord + 1) * size - 1) / 2


def _corners(grid: jax.Array, sizes: tuple[int, ...], align_corners: bool):
  """Flat indices and weights of the 2^n corners of every sample point.

  Args:
    grid: (N, P, n) coordinates, ordered (x, y[, z]).
    sizes: (W, H[, D]), the spatial sizes in grid order.

  Returns:
    idx: (N, P, 2^n) int32 row indices into the (D*H*W) flattened volume
      (clamped; out-of-range corners have weight 0).
    w: (N, P, 2^n) interpolation weights.
  """
  nsp = len(sizes)
  coords = [_unnormalize(grid[..., i], sizes[i], align_corners) for i in range(nsp)]
  lows = [jax.lax.stop_gradient(jnp.floor(x)) for x in coords]
  fracs = [x - x0 for x, x0 in zip(coords, lows, strict=True)]
  lows = [x0.astype(jnp.int32) for x0 in lows]
  strides, s = [], 1
  for size in sizes:  # row-major strides of (D, H, W), in grid order
    strides.append(s)
    s *= size
  idx, w = [], []
  for corner in itertools.product((0, 1), repeat=nsp):
    flat = jnp.zeros_like(lows[0])
    weight = jnp.ones_like(fracs[0])
    valid = jnp.ones(lows[0].shape, dtype=bool)
    for i, bit in enumerate(corner):
      pos = lows[i] + bit
      valid &= (pos >= 0) & (pos < sizes[i])
      flat = flat + jnp.clip(pos, 0, sizes[i] - 1) * strides[i]
      weight = weight * (fracs[i] if bit else 1 - fracs[i])
    idx.append(flat)
    w.append(jnp.where(valid, weight, 0))
  return jnp.stack(idx, axis=-1), jnp.stack(w, axis=-1)


def _gather_rows(flat: jax.Array, idx: jax.Array) -> jax.Array:
  """(N, S, C), (N, P) -> (N, P, C)."""
  return jax.vmap(lambda v, i: v[i])(flat, idx)


def _interp(flat: jax.Array, idx: jax.Array, w: jax.Array) -> jax.Array:
  """sum_k w_k * flat[idx_k]: 2^n fused gathers. (N,S,C),(N,P,K),(N,P,K) -> (N,P,C) f32."""
  out = None
  for k in range(idx.shape[-1]):
    term = w[..., k, None] * _gather_rows(flat, idx[..., k]).astype(w.dtype)
    out = term if out is None else out + term
  return out


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _sample_flat(flat: jax.Array, grid: jax.Array, sizes: tuple[int, ...], align_corners: bool):
  idx, w = _corners(grid, sizes, align_corners)
  return _interp(flat, idx, w)


@functools.partial(_sample_flat.defjvp, symbolic_zeros=True)
def _sample_flat_jvp(sizes, align_corners, primals, tangents):
  flat, grid = primals
  t_flat, t_grid = tangents
  idx, w = _corners(grid, sizes, align_corners)
  out = _interp(flat, idx, w)
  t_out = jnp.zeros_like(out)
  n, p, k = idx.shape
  if not isinstance(t_grid, SymbolicZero):
    # The corner rows as one stacked gather (N, P, 2^n, C): the transpose of
    # this term is then one contraction with the cotangent, which XLA runs far
    # faster than 2^n separate gather-reductions.
    rows = _gather_rows(flat, idx.reshape(n, p * k)).reshape(n, p, k, -1).astype(w.dtype)
    _, t_w = jax.jvp(lambda g: _corners(g, sizes, align_corners)[1], (grid,), (t_grid,))
    t_out = t_out + jnp.einsum("npk,npkc->npc", t_w, rows)
  if not isinstance(t_flat, SymbolicZero):
    # One stacked gather: its transpose (reverse mode) is a single scatter-add.
    t_rows = _gather_rows(t_flat, idx.reshape(n, p * k)).reshape(n, p, k, -1)
    t_out = t_out + jnp.einsum("npk,npkc->npc", w, t_rows.astype(w.dtype))
  return out, t_out


def grid_sample(
    inputs: jax.Array,
    grid: jax.Array,
    *,
    align_corners: bool = False,
) -> jax.Array:
  """Samples `inputs` at `grid` locations with (tri)linear interpolation.

  The primal is 2^n separate row gathers from the flattened input, each multiplied by its corner
  weight and summed (XLA fuses them into one loop; faster than one stacked gather of all corners, see
  benchmarks/RESULTS.md). A `custom_jvp` writes the input-tangent term as a single stacked gather, so
  reverse mode transposes it into ONE scatter-add instead of 2^n, and the grid tangent flows through
  the corner weights. Forward and reverse mode both work, to any order.

  Args:
    inputs: (N, H, W, C) or (N, D, H, W, C) array.
    grid: (N, Ho, Wo, 2) or (N, Do, Ho, Wo, 3) sampling locations in [-1, 1]
      ordered (x, y[, z]). A grid without the batch axis is broadcast over N.
    align_corners: PyTorch's `align_corners` flag.

  Returns:
    (N, Ho, Wo, C) or (N, Do, Ho, Wo, C), in the dtype of `inputs`
    (accumulated in at least float32).
  """
  nsp = inputs.ndim - 2  # number of spatial dims: 2 or 3
  if nsp not in (2, 3):
    raise ValueError(f"grid_sample expects a 4-D or 5-D input, got shape {inputs.shape}")
  if grid.shape[-1] != nsp:
    raise ValueError(
        f"grid's last axis must be {nsp} for a {inputs.ndim}-D input, got grid shape {grid.shape}")
  if grid.ndim == nsp + 1:  # unbatched grid
    grid = jnp.broadcast_to(grid, (inputs.shape[0],) + grid.shape)
  if grid.ndim != nsp + 2 or grid.shape[0] != inputs.shape[0]:
    raise ValueError(f"grid shape {grid.shape} does not match input shape {inputs.shape}")

  n, c = inputs.shape[0], inputs.shape[-1]
  sizes = tuple(inputs.shape[1:-1][::-1])  # (W, H[, D]) in grid order
  out_spatial = grid.shape[1:-1]
  grid = grid.astype(jnp.promote_types(grid.dtype, jnp.float32)).reshape(n, -1, nsp)
  out = _sample_flat(inputs.reshape(n, -1, c), grid, sizes, bool(align_corners))
  return out.reshape((n,) + out_spatial + (c,)).astype(inputs.dtype)
