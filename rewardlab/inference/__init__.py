"""Inference: the scorer (one model or an ensemble), weight averaging, scoring files, the HTTP server and the RLHF
reward function."""
