"""Product schemas for the OpenAPI document. Request bodies are parsed by hand in
``api/products.py`` (after authentication, contract §8) with the same rules as these models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

StatusName = Literal["Draft", "Active", "Inactive", "Archived"]


class ProductCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    price: float = Field(ge=0, description="At most 2 decimals")
    stock: int | None = Field(default=0, ge=0)
    category: str | None = Field(default=None, max_length=100)


class ProductUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    price: float | None = Field(default=None, ge=0, description="At most 2 decimals")
    stock: int | None = Field(default=None, ge=0)
    category: str | None = Field(default=None, max_length=100)
    status: str | None = Field(
        default=None, description="Draft, Active, Inactive or Archived (case-insensitive)"
    )


class StockChange(BaseModel):
    quantity_change: int


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
