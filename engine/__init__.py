"""engine: move tables into PostgreSQL — partitioned, transformed, validated, checkpointed, verified."""

from engine.memory import tune_allocator

tune_allocator()  # before pyarrow or any driver allocates
