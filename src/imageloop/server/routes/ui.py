"""The routes of the web page and the API it needs beyond the core routes (included by ``ROUTERS``)."""

from fastapi import APIRouter

from imageloop.server.routes.dashboard import router as dashboard_router
from imageloop.server.routes.ui_account import router as account_router
from imageloop.server.routes.ui_create import router as create_router
from imageloop.server.routes.ui_gallery import router as gallery_router
from imageloop.server.routes.ui_page import router as page_router
from imageloop.server.routes.ui_shares import router as shares_router

UI_ROUTERS: tuple[APIRouter, ...] = (
    account_router, create_router, gallery_router, shares_router, dashboard_router, page_router,
)

__all__ = ["UI_ROUTERS"]
