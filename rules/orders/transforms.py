"""Transforms for the `orders` data set: LazyFrame in, LazyFrame out, same rows."""

from __future__ import annotations

import polars as pl


def normalize(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Trim and lower-case e-mail addresses and statuses; upper-case currency codes."""
    return frame.with_columns(
        pl.col("email").str.strip_chars().str.to_lowercase(),
        pl.col("status").str.strip_chars().str.to_lowercase(),
        pl.col("currency").str.to_uppercase(),
    )
