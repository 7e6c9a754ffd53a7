"""Hybrid-batch robust fine-tuning: the losses, the attacks, the training step and the Ray Tune trainable.

r (config "ratio") and epsilon (config "epsilon") enter in `trainables.hybrid.hybrid_step`;
`trainables.trainable.train_hybrid` runs the loop and reports per-language metrics to Ray Tune.
"""
