"""store_async: asyncio client for the Microsoft Store services APIs.

The public API is assembled here once its modules land.
"""

__version__ = "0.1.0"
