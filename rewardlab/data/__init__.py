"""Data: files → rows (rows) → pairs (formats), groups, sentences, images → token ids (encode) → batches (collate)."""
