"""The warehouse layer: the only code that executes SQL; every statement is a file in sql/."""

from connector.warehouse.engine import (
    DEFAULT_WAREHOUSE_URL,
    WAREHOUSE_URL,
    MergeCounts,
    Stage,
    Transaction,
    Warehouse,
    WarehouseBusyError,
)

__all__ = [
    "DEFAULT_WAREHOUSE_URL",
    "WAREHOUSE_URL",
    "MergeCounts",
    "Stage",
    "Transaction",
    "Warehouse",
    "WarehouseBusyError",
]
