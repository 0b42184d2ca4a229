"""/docs and /redoc load nothing from another host, and every asset they name is served."""

from __future__ import annotations

import re

import pytest
from httpx import AsyncClient


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_work_offline(client: AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", html), "an asset from another host"
    assert "fonts.googleapis" not in html and "cdn.jsdelivr" not in html
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(
        r"""(?:url|spec-url)\s*[:=]\s*['"]([^'"]+)['"]""", html
    )
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        fetched = await client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 100, asset


def test_the_assets_are_outside_the_api_key_guard() -> None:
    from app.api_docs_pages import ASSETS_PATH
    from app.security import PROTECTED_PREFIX

    assert not ASSETS_PATH.startswith(PROTECTED_PREFIX)
