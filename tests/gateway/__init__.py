"""Gateway tests: real loopback HTTP against fake upstreams."""
