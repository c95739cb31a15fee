"""Model implementations, layers and the paged attention they share."""
