"""Native CPU kernels in C, compiled on first use with the system's C compiler (see build.py)."""
