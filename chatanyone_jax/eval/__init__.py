"""Evaluation back-ends for the paper's tables (§4): feature networks (Inception-V3 for FID, I3D for FVD,
LPIPS, SyncNet, identity embeddings) and the distances built on them. `infer.evaluate` drives them."""
