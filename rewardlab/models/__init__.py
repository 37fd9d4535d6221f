"""Models: backbones loaded or built, prepared for training (dropout, checkpointing, LoRA, dtypes), the reward
network that reads a reward in every batch layout, poolers, attention, image towers, and the saved folder's format."""
