"""StyleKD training: optimizers, EMA, the stage-1 and stage-2 loops, strategies and checkpoints."""
