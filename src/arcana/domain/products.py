"""The product catalog: the ``Product`` aggregate, its invariants and its repository port.

Invariants (contract §2, §8): name 1..200 characters; price ≥ 0 with at most 2 decimals and
at most 10 integer digits (NUMERIC(12,2)); stock ≥ 0 always; ``Archived`` is final.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Protocol, Self

from arcana.domain.events import DomainEvent
from arcana.errors import ValidationFailed

NAME_MAX = 200
CATEGORY_MAX = 100
DESCRIPTION_MAX = 10_000
PRICE_MAX = Decimal("9999999999.99")
STOCK_MAX = 2_147_483_647
LOW_STOCK_THRESHOLD = 10


class ProductStatus(StrEnum):
    DRAFT = "Draft"
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    ARCHIVED = "Archived"

    @classmethod
    def parse(cls, value: str, field: str = "status") -> ProductStatus:
        """Case-insensitive: ``"active"`` and ``"ACTIVE"`` are ``Active``."""
        found = _STATUS_BY_LOWER.get(value.strip().lower()) if isinstance(value, str) else None
        if found is None:
            allowed = ", ".join(s.value for s in cls)
            raise _invalid(field, f"must be one of {allowed}")
        return found


_STATUS_BY_LOWER = {s.value.lower(): s for s in ProductStatus}


def _invalid(field: str, msg: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {msg}", errors=[{"loc": [field], "msg": msg, "type": "value_error"}]
    )


def parse_product_id(value: str) -> str:
    """The canonical (lowercase, hyphenated) form of a product id; malformed → 422."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise _invalid("id", "is not a valid UUID") from None


def check_name(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("name", "must not be empty")
    if len(value) > NAME_MAX:
        raise _invalid("name", f"must be at most {NAME_MAX} characters")
    if "\x00" in value:
        raise _invalid("name", "must not contain NUL characters")
    return value


def check_optional_text(field: str, value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        raise _invalid(field, f"must be at most {limit} characters")
    if "\x00" in value:
        raise _invalid(field, "must not contain NUL characters")
    return value


def check_price(value: Any) -> Decimal:
    """A number ≥ 0 with at most 2 decimals that fits NUMERIC(12,2). Floats are read through
    their shortest repr, so the JSON text ``19.99`` is exactly ``Decimal("19.99")``."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise _invalid("price", "must be a number")
    try:
        price = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise _invalid("price", "must be a number") from None
    if not price.is_finite():
        raise _invalid("price", "must be a finite number")
    if price < 0:
        raise _invalid("price", "must be greater than or equal to 0")
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and price != price.quantize(Decimal("0.01")):
        raise _invalid("price", "must have at most 2 decimal places")
    if price > PRICE_MAX:
        raise _invalid("price", f"must be at most {PRICE_MAX}")
    return price.quantize(Decimal("0.01"))


def check_stock(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid("stock", "must be an integer")
    if value < 0:
        raise _invalid("stock", "must be greater than or equal to 0")
    if value > STOCK_MAX:
        raise _invalid("stock", f"must be at most {STOCK_MAX}")
    return value


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    description: str | None
    price: Decimal
    stock: int
    category: str | None
    status: ProductStatus
    created_at: datetime
    updated_at: datetime

    def with_changes(self, changes: ProductChanges, now: datetime) -> Product:
        """Apply a partial update. ``Archived`` is final: any status but ``Archived`` is 422."""
        status = self.status
        if changes.status is not None:
            if self.status is ProductStatus.ARCHIVED and changes.status is not self.status:
                raise _invalid("status", "an Archived product cannot change status")
            status = changes.status
        return replace(
            self,
            name=changes.name if changes.name is not None else self.name,
            description=changes.description if changes.has_description else self.description,
            price=changes.price if changes.price is not None else self.price,
            stock=changes.stock if changes.stock is not None else self.stock,
            category=changes.category if changes.has_category else self.category,
            status=status,
            updated_at=now,
        )


@dataclass(frozen=True, slots=True)
class NewProduct:
    """Validated input of a create; the product starts as ``Draft``."""

    name: str
    price: Decimal
    description: str | None = None
    stock: int = 0
    category: str | None = None

    @classmethod
    def build(
        cls,
        *,
        name: str,
        price: Any,
        description: str | None = None,
        stock: Any = 0,
        category: str | None = None,
    ) -> NewProduct:
        return cls(
            name=check_name(name),
            price=check_price(price),
            description=check_optional_text("description", description, DESCRIPTION_MAX),
            stock=check_stock(0 if stock is None else stock),
            category=check_optional_text("category", category, CATEGORY_MAX),
        )


@dataclass(frozen=True, slots=True)
class ProductChanges:
    """Validated partial update. ``None`` means "leave as is"; description and category may be
    cleared explicitly (``has_* = True`` with ``None``)."""

    name: str | None = None
    price: Decimal | None = None
    stock: int | None = None
    status: ProductStatus | None = None
    description: str | None = None
    has_description: bool = False
    category: str | None = None
    has_category: bool = False

    @classmethod
    def build(cls, fields: dict[str, Any]) -> ProductChanges:
        """From the fields present in the request (absent keys are not in ``fields``)."""
        known = {"name", "description", "price", "stock", "category", "status"}
        unknown = set(fields) - known
        if unknown:
            raise _invalid(sorted(unknown)[0], "unknown field")
        name = fields.get("name")
        price = fields.get("price")
        stock = fields.get("stock")
        status = fields.get("status")
        if "name" in fields and name is None:
            raise _invalid("name", "must not be null")
        if "price" in fields and price is None:
            raise _invalid("price", "must not be null")
        if "stock" in fields and stock is None:
            raise _invalid("stock", "must not be null")
        if "status" in fields and status is None:
            raise _invalid("status", "must not be null")
        if status is not None and not isinstance(status, str):
            raise _invalid("status", "must be a string")
        for text_field in ("description", "category"):
            value = fields.get(text_field)
            if value is not None and not isinstance(value, str):
                raise _invalid(text_field, "must be a string")
        return cls(
            name=check_name(name) if name is not None else None,
            price=check_price(price) if price is not None else None,
            stock=check_stock(stock) if stock is not None else None,
            status=ProductStatus.parse(status) if status is not None else None,
            description=check_optional_text(
                "description", fields.get("description"), DESCRIPTION_MAX
            ),
            has_description="description" in fields,
            category=check_optional_text("category", fields.get("category"), CATEGORY_MAX),
            has_category="category" in fields,
        )


@dataclass(frozen=True, slots=True)
class ProductQuery:
    page: int = 0
    size: int = 10
    category: str | None = None
    status: ProductStatus | None = None
    name_contains: str | None = None
    """Case-insensitive substring of the name (the console's search box)."""

    @classmethod
    def build(
        cls,
        page: int = 0,
        size: int = 10,
        category: str | None = None,
        status: str | None = None,
        name_contains: str | None = None,
    ) -> ProductQuery:
        if page < 0:
            raise _invalid("page", "must be greater than or equal to 0")
        if page > 10_000_000:
            raise _invalid("page", "must be at most 10000000")
        if not 1 <= size <= 100:
            raise _invalid("size", "must be between 1 and 100")
        return cls(
            page=page,
            size=size,
            category=category or None,
            status=ProductStatus.parse(status) if status else None,
            name_contains=(name_contains.strip().lower() or None) if name_contains else None,
        )


@dataclass(frozen=True, slots=True)
class ProductPage:
    items: Sequence[Product]
    total: int
    page: int
    size: int

    @property
    def has_next(self) -> bool:
        return (self.page + 1) * self.size < self.total


class ProductRepository(Protocol):
    """Storage of products inside one unit of work."""

    async def add(self, product: Product) -> None: ...

    async def add_many(self, products: Sequence[Product]) -> None:
        """One multi-row insert (demo data)."""
        ...

    async def get(self, product_id: str) -> Product | None: ...

    async def get_for_update(self, product_id: str) -> Product | None:
        """Load and lock the row (PostgreSQL ``FOR UPDATE``) for a read-modify-write."""
        ...

    async def save(self, product: Product) -> None: ...

    async def delete(self, product_id: str) -> bool: ...

    async def adjust_stock(self, product_id: str, delta: int, now: datetime) -> Product | None:
        """One atomic statement: ``stock = stock + delta`` only if the result is in
        0..STOCK_MAX. ``None`` when nothing matched (missing product or out of range)."""
        ...

    async def exists(self, product_id: str) -> bool: ...

    async def page(
        self, query: ProductQuery, with_total: bool = True
    ) -> tuple[list[Product], int | None]:
        """One page, newest first (``created_at`` desc, ``id`` desc), and the total count
        (one more query; ``None`` when not asked for)."""
        ...

    async def batch_after(self, after: tuple[datetime, str] | None, limit: int) -> list[Product]:
        """Keyset scan of the whole catalog in list order, for the export."""
        ...


@dataclass(frozen=True, slots=True)
class StockChange:
    """What a stock change did: the updated product, or ``None`` when nothing changed (then
    ``exists`` tells a missing product from a change out of 0..STOCK_MAX)."""

    product: Product | None
    exists: bool


LevelEvents = Callable[[int, int], list[DomainEvent]]
"""The stock level events of a change, from the stock before and after it (``stock_events``
of one product)."""


class StockChanges(Protocol):
    """Stock changes applied outside a unit of work, several requests' changes sharing one
    transaction (group commit: embedded SQLite). Each change is still one atomic statement
    (never below 0), and its events are stored in the same transaction as the change."""

    async def adjust_stock(
        self,
        product_id: str,
        delta: int,
        now: datetime,
        updated: DomainEvent,
        level_events: LevelEvents,
    ) -> StockChange:
        """``updated`` is stored with any change that is made, then ``level_events``."""
        ...


class ProductUnitOfWork(Protocol):
    """The slice of the unit of work the catalog needs."""

    @property
    def products(self) -> ProductRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None: ...

    def record(self, *events: DomainEvent) -> None: ...

    async def write_recorded(self) -> None:
        """Write what was recorded so far now, in this transaction (before a statement that
        takes a row lock, so the lock is held for fewer round trips)."""
        ...

    async def commit(self) -> None: ...


def stock_events(product_id: str, before: int, after: int) -> list[DomainEvent]:
    """``product.low_stock`` on every change that leaves stock in 1..10, ``product.out_of_stock``
    when it becomes 0 (contract §8)."""
    if before == after:
        return []
    if after == 0:
        return [
            DomainEvent("product.out_of_stock", {"productId": product_id}, aggregate_id=product_id)
        ]
    if 1 <= after <= LOW_STOCK_THRESHOLD:
        return [
            DomainEvent(
                "product.low_stock",
                {"productId": product_id, "stock": after},
                aggregate_id=product_id,
            )
        ]
    return []


def product_event(event_type: str, product_id: str) -> DomainEvent:
    return DomainEvent(event_type, {"productId": product_id}, aggregate_id=product_id)
