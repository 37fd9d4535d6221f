"""Evaluation: metrics computed from rewards and embeddings (preferences, STS, retrieval, uncertainty, the
RewardBench-style report); no model is loaded here."""
