"""Training: an embedding cache for frozen encoders, the training
loop (frozen-encoder heads or fine-tuning, full or LoRA), and the default-model recipe.

Depends on `moderation/` (never the reverse). Needs the `train` extra for LoRA (peft).
"""
