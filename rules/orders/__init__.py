"""Rules for the `orders` data set: used by configs/demo.toml and the reference perf job."""
