"""Optional L1 anchoring of quorum-final checkpoints (design §10)."""
