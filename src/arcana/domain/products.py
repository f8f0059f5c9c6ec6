"""The product catalog: the ``Product`` aggregate, its input rules and its repository port.

The input rules (contract §2, §8) are data: ``NAME``, ``DESCRIPTION``, ``CATEGORY``, ``PRICE``,
``STOCK``, ``QUANTITY_CHANGE``, ``PAGE``, ``SIZE`` and ``SEARCH`` below, with ``ProductStatus``
for the status names. Every transport checks input through them, and the HTTP layer publishes
its OpenAPI constraints from the same objects (``api/schemas_products.py``), so a limit is
written once. In short: name 1..200 characters with a non-blank one; description ≤ 10 000 and
category ≤ 100 characters; no text holds NUL; price ≥ 0 with at most 2 decimals and at most
10 integer digits (NUMERIC(12,2)); stock 0..2^31-1 always; ``Archived`` is final.

A broken rule raises ``ValidationFailed`` naming the field; where that field sits in a request
(``loc``) is for the transport to say.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Protocol, Self

from arcana.domain.events import DomainEvent
from arcana.errors import ValidationFailed

LOW_STOCK_THRESHOLD = 10


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(field=field, message=message)


@dataclass(frozen=True, slots=True)
class TextRule:
    """A text input: at most ``max_length`` characters (code points), never a NUL (PostgreSQL
    text cannot hold one); with ``blank=False`` it must hold a non-whitespace character."""

    field: str
    max_length: int
    blank: bool = True

    @property
    def min_length(self) -> int:
        return 0 if self.blank else 1

    @property
    def pattern(self) -> str:
        """The same rule as a regular expression (Python ``re`` and ECMA-262 agree on it)."""
        return r"^[^\x00]*$" if self.blank else r"^[^\x00]*[^\s\x00][^\x00]*$"

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _invalid(self.field, "must be a string")
        if not self.blank and not value.strip():
            raise _invalid(self.field, "must not be empty")
        if len(value) > self.max_length:
            raise _invalid(self.field, f"must be at most {self.max_length} characters")
        if "\x00" in value:
            raise _invalid(self.field, "must not contain NUL characters")
        return value

    def check_optional(self, value: Any) -> str | None:
        return None if value is None else self.check(value)


@dataclass(frozen=True, slots=True)
class IntRule:
    """An integer in ``minimum..maximum`` (a JSON ``2.0`` or ``true`` is not an integer)."""

    field: str
    minimum: int
    maximum: int

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(self.field, "must be an integer")
        if value < self.minimum:
            raise _invalid(self.field, f"must be greater than or equal to {self.minimum}")
        if value > self.maximum:
            raise _invalid(self.field, f"must be at most {self.maximum}")
        return value


@dataclass(frozen=True, slots=True)
class MoneyRule:
    """A number in ``minimum..maximum`` with at most ``places`` decimals, kept as ``Decimal``.
    Floats are read through their shortest repr, so the JSON text ``19.99`` is exactly
    ``Decimal("19.99")``. Text is not a number here, whatever it spells."""

    field: str
    minimum: Decimal
    maximum: Decimal
    places: int

    def check(self, value: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise _invalid(self.field, "must be a number")
        try:
            amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        except (InvalidOperation, ValueError):
            raise _invalid(self.field, "must be a number") from None
        if not amount.is_finite():
            raise _invalid(self.field, "must be a finite number")
        if amount < self.minimum:
            raise _invalid(self.field, f"must be greater than or equal to {self.minimum}")
        quantum = Decimal(1).scaleb(-self.places)
        exponent = amount.as_tuple().exponent
        if (
            isinstance(exponent, int)
            and exponent < -self.places
            and amount != amount.quantize(quantum)
        ):
            raise _invalid(self.field, f"must have at most {self.places} decimal places")
        if amount > self.maximum:
            raise _invalid(self.field, f"must be at most {self.maximum}")
        return amount.quantize(quantum)


NAME_MAX = 200
CATEGORY_MAX = 100
DESCRIPTION_MAX = 10_000
PRICE_MAX = Decimal("9999999999.99")
STOCK_MAX = 2_147_483_647
"""The stock column is a 32-bit integer; the atomic stock update is bounded by it too."""

NAME = TextRule("name", NAME_MAX, blank=False)
DESCRIPTION = TextRule("description", DESCRIPTION_MAX)
CATEGORY = TextRule("category", CATEGORY_MAX)
PRICE = MoneyRule("price", Decimal(0), PRICE_MAX, places=2)
STOCK = IntRule("stock", 0, STOCK_MAX)
QUANTITY_CHANGE = IntRule("quantity_change", -STOCK_MAX, STOCK_MAX)
PAGE = IntRule("page", 0, 10_000_000)
SIZE = IntRule("size", 1, 100)
SEARCH = TextRule("q", NAME_MAX)
"""A case-insensitive substring of the name (the console's search box): no longer than a name."""

UPDATABLE = (NAME, DESCRIPTION, PRICE, STOCK, CATEGORY)
"""The fields a partial update may carry besides ``status``."""


def require(fields: Mapping[str, Any], field: str) -> Any:
    """The value of a field a request must carry."""
    if field not in fields:
        raise _invalid(field, "field required")
    return fields[field]


class ProductStatus(StrEnum):
    DRAFT = "Draft"
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    ARCHIVED = "Archived"

    @classmethod
    def parse(cls, value: Any, field: str = "status") -> ProductStatus:
        """Case-insensitive, surrounding blanks ignored: ``"active"`` and ``" ACTIVE"`` are
        ``Active``."""
        if not isinstance(value, str):
            raise _invalid(field, "must be a string")
        found = _STATUS_BY_LOWER.get(value.strip().lower())
        if found is None:
            allowed = ", ".join(s.value for s in cls)
            raise _invalid(field, f"must be one of {allowed}")
        return found


_STATUS_BY_LOWER = {s.value.lower(): s for s in ProductStatus}


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


STATUS_PATTERN = r"^\s*(" + "|".join(_any_case(s.value) for s in ProductStatus) + r")\s*$"
"""``ProductStatus.parse`` as a regular expression, for published schemas."""


_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_canonical_product_id(value: str) -> bool:
    """Whether ``value`` is already what ``parse_product_id`` would return (a hot path can then
    skip parsing it)."""
    return _CANONICAL_ID.fullmatch(value) is not None


def parse_product_id(value: Any) -> str:
    """The canonical (lowercase, hyphenated) form of a product id; malformed → 422."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise _invalid("product_id", "is not a valid UUID") from None


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
        name: Any,
        price: Any,
        description: Any = None,
        stock: Any = 0,
        category: Any = None,
    ) -> NewProduct:
        return cls(
            name=NAME.check(name),
            price=PRICE.check(price),
            description=DESCRIPTION.check_optional(description),
            stock=STOCK.check(0 if stock is None else stock),
            category=CATEGORY.check_optional(category),
        )

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> NewProduct:
        """From the fields of a create request: ``name`` and ``price`` are required, a null
        ``stock`` is 0, other keys are ignored."""
        return cls.build(
            name=require(fields, NAME.field),
            price=require(fields, PRICE.field),
            description=fields.get(DESCRIPTION.field),
            stock=fields.get(STOCK.field),
            category=fields.get(CATEGORY.field),
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
    def build(cls, fields: Mapping[str, Any]) -> ProductChanges:
        """From the fields present in the request (absent keys are not in ``fields``)."""
        unknown = set(fields) - CHANGEABLE
        if unknown:
            raise _invalid(sorted(unknown)[0], "unknown field")
        for required in (NAME.field, PRICE.field, STOCK.field, "status"):
            if required in fields and fields[required] is None:
                raise _invalid(required, "must not be null")
        present = {k: v for k, v in fields.items() if v is not None}
        return cls(
            name=NAME.check(present["name"]) if "name" in present else None,
            price=PRICE.check(present["price"]) if "price" in present else None,
            stock=STOCK.check(present["stock"]) if "stock" in present else None,
            status=ProductStatus.parse(present["status"]) if "status" in present else None,
            description=DESCRIPTION.check_optional(fields.get("description")),
            has_description="description" in fields,
            category=CATEGORY.check_optional(fields.get("category")),
            has_category="category" in fields,
        )


CHANGEABLE = frozenset({rule.field for rule in UPDATABLE} | {"status"})
"""The fields a partial update may name."""


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
        search = SEARCH.check(name_contains).strip().lower() if name_contains else ""
        return cls(
            page=PAGE.check(page),
            size=SIZE.check(size),
            category=CATEGORY.check(category) if category else None,
            status=ProductStatus.parse(status) if status else None,
            name_contains=search or None,
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
of one product). Empty for any change that leaves at least ``QUIET_STOCK`` in stock."""


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


QUIET_STOCK = LOW_STOCK_THRESHOLD + 1
"""``stock_events`` records nothing for a change that leaves at least this much in stock, so
a store can commit such a change and its ``product.updated`` row in one statement without
knowing the stock beforehand."""


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
