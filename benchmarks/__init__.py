"""Speed and memory benchmarks. Each ``bench_*.py`` module prints JSON lines."""
