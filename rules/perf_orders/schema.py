"""What a valid perf order looks like: the reference rules the engine's perf cases validate against.

The checks mirror rules/orders/schema.py on the perf table's columns, so validation costs what a real
job's rules would. jsonb and uuid arrive from the source as strings; numeric(12,2) as Decimal(12,2).
"""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

STATUSES = ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF"]


class PerfOrders(pa.DataFrameModel):
    id: int = pa.Field(ge=1)
    customer_id: int = pa.Field(ge=1)
    status: str = pa.Field(isin=STATUSES)
    amount: Annotated[pl.Decimal, 12, 2] = pa.Field(ge=0, le=1_000_000)
    currency: str = pa.Field(isin=CURRENCIES)
    created_at: Annotated[pl.Datetime, "us", "UTC"]
    updated_at: Annotated[pl.Datetime, "us", "UTC"]
    email: str = pa.Field(str_matches=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    note: str = pa.Field(nullable=True, str_length={"max_value": 2000})
    payload: str = pa.Field(nullable=True, str_startswith="{")  # jsonb arrives as its text

    class Config:
        strict = False  # other columns pass through unchecked
        coerce = False
