"""Long-form and huge corpora: voice activity, segment policy, curation, WebDataset shards."""
