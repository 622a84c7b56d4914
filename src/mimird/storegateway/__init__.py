"""The store-gateway: serves reads from the blocks in the bucket."""
