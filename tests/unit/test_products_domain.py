"""Product invariants without a database."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from arcana.domain.products import (
    CATEGORY,
    DESCRIPTION,
    NAME,
    PRICE,
    QUANTITY_CHANGE,
    QUIET_STOCK,
    SEARCH,
    STATUS_PATTERN,
    STOCK_MAX,
    NewProduct,
    Product,
    ProductChanges,
    ProductPage,
    ProductQuery,
    ProductStatus,
    TextRule,
    parse_product_id,
    stock_events,
)
from arcana.errors import ValidationFailed

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def product(status: ProductStatus = ProductStatus.DRAFT, stock: int = 5) -> Product:
    return Product(
        id="p",
        name="n",
        description=None,
        price=Decimal("1.00"),
        stock=stock,
        category=None,
        status=status,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(0, "0.00"), (19.99, "19.99"), (0.1, "0.10"), (5, "5.00"), (9999999999.99, "9999999999.99")],
)
def test_price_exact(raw: float, expected: str) -> None:
    assert PRICE.check(raw) == Decimal(expected)


@pytest.mark.parametrize(
    "raw", [1.005, -0.01, float("nan"), float("inf"), 1e10, True, None, 1e-7, "19.99"]
)
def test_price_rejected(raw: object) -> None:
    with pytest.raises(ValidationFailed):
        PRICE.check(raw)


def test_status_parse_is_case_insensitive() -> None:
    assert ProductStatus.parse("aRcHiVeD") is ProductStatus.ARCHIVED
    with pytest.raises(ValidationFailed):
        ProductStatus.parse("deleted")


def test_archived_is_final() -> None:
    archived = product(ProductStatus.ARCHIVED)
    with pytest.raises(ValidationFailed):
        archived.with_changes(ProductChanges.build({"status": "Active"}), NOW)
    same = archived.with_changes(ProductChanges.build({"status": "archived", "name": "x"}), NOW)
    assert same.status is ProductStatus.ARCHIVED
    assert same.name == "x"
    for s in ("Active", "Inactive", "Draft", "Archived"):
        assert product().with_changes(ProductChanges.build({"status": s}), NOW).status.value == s


def test_partial_update_keeps_absent_fields() -> None:
    p = Product(
        id="p",
        name="n",
        description="d",
        price=Decimal("1.00"),
        stock=1,
        category="c",
        status=ProductStatus.DRAFT,
        created_at=NOW,
        updated_at=NOW,
    )
    q = p.with_changes(ProductChanges.build({"price": 2}), NOW)
    assert (q.description, q.category, q.price) == ("d", "c", Decimal("2.00"))
    r = p.with_changes(ProductChanges.build({"description": None}), NOW)
    assert r.description is None
    assert r.category == "c"


def test_new_product_limits() -> None:
    assert NewProduct.build(name="x" * 200, price=1).stock == 0
    for bad in (
        {"name": "", "price": 1},
        {"name": "x" * 201, "price": 1},
        {"name": "x", "price": 1, "stock": -1},
    ):
        with pytest.raises(ValidationFailed):
            NewProduct.build(**bad)  # type: ignore[arg-type]


def test_stock_events() -> None:
    assert [e.event_type for e in stock_events("p", 20, 10)] == ["product.low_stock"]
    assert stock_events("p", 10, 9)[0].data == {"productId": "p", "stock": 9}
    assert [e.event_type for e in stock_events("p", 3, 0)] == ["product.out_of_stock"]
    assert stock_events("p", 20, 11) == []
    assert stock_events("p", 5, 5) == []
    assert stock_events("p", 0, 4)[0].aggregate_id == "p"


def test_no_stock_event_from_quiet_stock_up() -> None:
    """PostgreSQL commits a change that leaves ``QUIET_STOCK`` or more in one statement,
    without its level events: there must be none to leave out."""
    assert stock_events("p", QUIET_STOCK, QUIET_STOCK - 1) != []
    for before in (0, 1, QUIET_STOCK - 1, QUIET_STOCK, 1_000, STOCK_MAX):
        for after in (QUIET_STOCK, QUIET_STOCK + 1, 1_000, STOCK_MAX):
            assert stock_events("p", before, after) == [], (before, after)


def test_query_and_page() -> None:
    with pytest.raises(ValidationFailed):
        ProductQuery.build(size=0)
    with pytest.raises(ValidationFailed):
        ProductQuery.build(size=101)
    with pytest.raises(ValidationFailed):
        ProductQuery.build(page=-1)
    assert ProductQuery.build(status="active").status is ProductStatus.ACTIVE
    assert ProductPage([], total=20, page=0, size=10).has_next
    assert not ProductPage([], total=20, page=1, size=10).has_next


def test_ids() -> None:
    assert parse_product_id("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11") == (
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    )
    with pytest.raises(ValidationFailed):
        parse_product_id("nope")


@pytest.mark.parametrize("rule", [NAME, DESCRIPTION, CATEGORY, SEARCH])
@pytest.mark.parametrize(
    "text", ["", " ", "\t\n", "\x1c", "a", " a ", "a\x00", "\x00", "\u00a0", "é", "x y"]
)
def test_text_patterns_say_what_the_checks_do(rule: TextRule, text: str) -> None:
    """The published pattern and the check agree (lengths are published on their own)."""
    error: ValidationFailed | None = None
    try:
        rule.check(text)
    except ValidationFailed as exc:
        error = exc
    assert (re.fullmatch(rule.pattern, text) is not None) == (error is None)
    assert error is None or error.field == rule.field


@pytest.mark.parametrize(
    "text", ["Draft", "dRaFt", " active ", "INACTIVE", "archived\n", "Drafts", "", "Deleted", "A"]
)
def test_status_pattern_says_what_parse_does(text: str) -> None:
    try:
        ProductStatus.parse(text)
        accepted = True
    except ValidationFailed:
        accepted = False
    assert (re.fullmatch(STATUS_PATTERN, text) is not None) == accepted


def test_errors_name_the_field() -> None:
    with pytest.raises(ValidationFailed) as info:
        NewProduct.from_fields({"name": "x", "price": 1, "description": "d" * 10_001})
    assert (info.value.field, info.value.message) == (
        "description",
        "must be at most 10000 characters",
    )
    assert info.value.detail == "description: must be at most 10000 characters"
    with pytest.raises(ValidationFailed) as info:
        NewProduct.from_fields({"name": "x"})
    assert (info.value.field, info.value.message) == ("price", "field required")
    with pytest.raises(ValidationFailed) as info:
        QUANTITY_CHANGE.check(STOCK_MAX + 1)
    assert info.value.field == "quantity_change"
