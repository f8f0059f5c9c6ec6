"""Product schemas for the OpenAPI document, built from the domain's input rules.

Request bodies are parsed by hand in ``api/products.py`` (after authentication, contract §8)
and checked by the domain (``NewProduct``, ``ProductChanges``, ``QUANTITY_CHANGE``). These
models only publish those rules: every length, bound, pattern and precision below is read from
the rule objects of ``domain/products.py``, so the document cannot drift from what the service
enforces (``tests/e2e/test_products_rules.py`` walks the published document to prove it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from arcana.domain.products import (
    CATEGORY,
    DESCRIPTION,
    NAME,
    PRICE,
    QUANTITY_CHANGE,
    STATUS_PATTERN,
    STOCK,
    IntRule,
    MoneyRule,
    ProductStatus,
    TextRule,
)

StatusName = Literal["Draft", "Active", "Inactive", "Archived"]
DECIMAL_PLACES = "x-decimal-places"
"""Extension keyword: the most decimals a number may carry (JSON Schema's ``multipleOf`` is
unreliable with binary floats such as 0.01)."""


def text_limits(rule: TextRule) -> dict[str, Any]:
    """The constraints of a text rule, as keywords of ``Field`` or ``Query``."""
    limits: dict[str, Any] = {"max_length": rule.max_length, "pattern": rule.pattern}
    if rule.min_length:
        limits["min_length"] = rule.min_length
    return limits


def int_limits(rule: IntRule) -> dict[str, Any]:
    return {"ge": rule.minimum, "le": rule.maximum}


def money_limits(rule: MoneyRule) -> dict[str, Any]:
    return {
        "ge": float(rule.minimum),
        "le": float(rule.maximum),
        "description": f"At most {rule.places} decimals",
        "json_schema_extra": {DECIMAL_PLACES: rule.places},
    }


_STATUS_HELP = ", ".join(s.value for s in ProductStatus) + " (case-insensitive)"

Name = Annotated[str, Field(**text_limits(NAME))]
Description = Annotated[str, Field(**text_limits(DESCRIPTION))]
Category = Annotated[str, Field(**text_limits(CATEGORY))]
Price = Annotated[float, Field(**money_limits(PRICE))]
Stock = Annotated[int, Field(**int_limits(STOCK))]
QuantityChange = Annotated[int, Field(**int_limits(QUANTITY_CHANGE))]
Status = Annotated[str, Field(pattern=STATUS_PATTERN, description=_STATUS_HELP)]


class ProductCreate(BaseModel):
    name: Name
    description: Description | None = None
    price: Price
    stock: Stock | None = 0
    category: Category | None = None


class ProductUpdate(BaseModel):
    name: Name | None = None
    description: Description | None = None
    price: Price | None = None
    stock: Stock | None = None
    category: Category | None = None
    status: Status | None = None


class StockChange(BaseModel):
    quantity_change: QuantityChange


class ProductRead(BaseModel):
    id: str
    name: str
    description: str | None
    price: float
    stock: int
    category: str | None
    status: StatusName
    created_at: datetime
    updated_at: datetime


class ProductList(BaseModel):
    data: list[ProductRead]
    page: int
    size: int
    total: int


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body parsed by hand."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
