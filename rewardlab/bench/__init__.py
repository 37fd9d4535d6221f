"""Benchmarks that compare rewardlab with other reward-model trainers."""
