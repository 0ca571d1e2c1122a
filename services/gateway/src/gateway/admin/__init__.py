"""The admin API (``/admin/v1``, admin token) and ``GET /v1/balance`` (API key).

Admin routes validate bodies with the :mod:`contracts.admin` models and forward each call as a
``contracts.AdminRequest`` to the owning service over NATS request/reply; ``create_app`` mounts
:data:`router`.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import balance, billing_routes, catalog_routes

router = APIRouter()
router.include_router(catalog_routes.router)
router.include_router(billing_routes.router)
router.include_router(balance.router)

__all__ = ["router"]
