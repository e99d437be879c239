"""jetpool's benchmarks (see README.md). ``bench.lib`` holds what they share."""
