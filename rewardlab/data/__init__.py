"""Data: rows in every format → pairs (formats) → token ids (encode) → batches (collate)."""
