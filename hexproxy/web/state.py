"""Typed application keys: what create_app puts on the app and handlers read."""

from __future__ import annotations

from aiohttp import web

from ..cache.policy import Cache
from ..config import Config
from ..orgs import OrgRepos

CONFIG = web.AppKey("config", Config)
CACHE = web.AppKey("cache", Cache)
PUBLIC_KEY_PEM = web.AppKey("public_key_pem", bytes)
ORGS = web.AppKey("orgs", OrgRepos)
