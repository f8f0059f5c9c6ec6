"""The product's JSON wire form (contract §2), as the catalog caches and serves it.

``PRODUCT_JSON`` and ``PAGE_JSON`` are the encodings the routes hand to ``ProductService``:
the service stores their bytes in the cache and the routes answer them unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

from arcana.domain.products import Product, ProductPage
from arcana.services.products import Encoding

_JSON_OPTS = orjson.OPT_UTC_Z


def product_to_dict(p: Product) -> dict[str, Any]:
    """``price`` is a JSON number: a NUMERIC(12,2) value has at most 12 significant digits,
    so the shortest float repr prints exactly its decimal text."""
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "price": float(p.price),
        "stock": p.stock,
        "category": p.category,
        "status": p.status.value,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


def product_to_json(p: Product) -> bytes:
    return orjson.dumps(product_to_dict(p), option=_JSON_OPTS)


def page_to_json(page: ProductPage) -> bytes:
    return orjson.dumps(
        {
            "data": [product_to_dict(p) for p in page.items],
            "page": page.page,
            "size": page.size,
            "total": page.total,
        },
        option=_JSON_OPTS,
    )


PRODUCT_JSON: Encoding[Product] = Encoding("json", product_to_json)
PAGE_JSON: Encoding[ProductPage] = Encoding("json", page_to_json)
