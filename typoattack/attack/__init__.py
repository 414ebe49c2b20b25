"""Drawing attacks: text masks at a requested pixel fraction (render) and their compositing on batches (compose)."""
