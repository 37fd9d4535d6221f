"""rewardlab: preference reward models (Bradley–Terry) and their contrastive siblings on one small core."""

__version__ = "0.1.0"
