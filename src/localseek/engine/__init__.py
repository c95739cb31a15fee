"""The inference engine: scheduling, paged KV, model execution, sampling."""
