"""The demo (``python -m aunet.demo``) and the sample data it, the tests and the benchmarks make offline."""
