"""The compactor: compaction and retention of the bucket's blocks, block upload, tenant deletion."""
