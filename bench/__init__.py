"""Performance benchmarks (`make bench`): every figure is a ratio measured within one run."""
