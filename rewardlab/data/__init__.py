"""Data: files → rows (:mod:`.rows`) → preference pairs (:mod:`.pairs`), groups (:mod:`.groups`), sentences, STS
pairs, images → token ids (:mod:`.encode`) → batches (:mod:`.collate`)."""
