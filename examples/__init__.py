"""Web apps that use optitrack, each complete and runnable as is (see docs/frameworks.md).

A package so that ``uvicorn examples.fastapi_app:app`` and
``python -m aiohttp.web examples.aiohttp_app:create_app`` find them from the
repository's root.
"""
