"""Checkpoint converters: PyTorch weights -> chatanyone_jax variables (NumPy, no PyTorch needed).

`state_dict`: read one weights file into a flat state dict and check its keys / shapes;
`torch_pickle` (with `torch_unpickler`): the torch-free reader of `torch.save` files;
`liveportrait`: LivePortrait's F, M, W, G and stitching / retargeting MLPs. The command line that
converts a whole LivePortrait weights folder is `python -m train.convert`.
"""
