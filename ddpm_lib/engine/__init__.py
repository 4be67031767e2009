"""The training engine: one loop for every network (``train``), its CUDA graph (``graphs``), EMA
(``ema``), checkpoints (``checkpoints``), torchrun (``distributed``) and what it logs (``tracking``).
It is handed its network and callbacks by the wiring; it imports no network and no plotting."""
