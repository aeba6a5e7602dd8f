"""What a valid order looks like. Rows failing any check are quarantined with the check's name."""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

STATUSES = ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF"]


class Orders(pa.DataFrameModel):
    id: int = pa.Field(ge=1)
    customer_id: int = pa.Field(ge=1)
    status: str = pa.Field(isin=STATUSES)
    amount: Annotated[pl.Decimal, 12, 2] = pa.Field(ge=0, le=1_000_000)
    currency: str = pa.Field(isin=CURRENCIES)
    email: str = pa.Field(str_matches=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    note: str = pa.Field(nullable=True, str_length={"max_value": 2000})

    class Config:
        strict = False  # other columns pass through unchecked
        coerce = True  # check values, whatever integer width the source uses
