"""Database reads behind the web pages and API, one module per page, as plain dataclasses
(writes are use cases of `services`). Routes call a function here and render or serialise what
it returns; the shapes mirror the JSON export object so pages, API and exports agree.
"""
