"""Flax Linen building blocks shared by the renderer and the motion models."""

from chatanyone_jax.layers.attention import MultiHeadAttention
from chatanyone_jax.layers.blocks import (
                                          BatchNorm,
                                          DownBlock2d,
                                          DownBlock3d,
                                          ResBlock2d,
                                          ResBlock3d,
                                          SameBlock2d,
                                          UpBlock2d,
                                          UpBlock3d,
)
from chatanyone_jax.layers.norm import SPADE, AdaIN, AdaLNZero, AdaLNZeroFinal

__all__ = [
    "AdaIN", "AdaLNZero", "AdaLNZeroFinal", "BatchNorm", "DownBlock2d", "DownBlock3d", "MultiHeadAttention",
    "ResBlock2d", "ResBlock3d", "SPADE", "SameBlock2d", "UpBlock2d", "UpBlock3d",
]
