"""`ao serve`: one loaded `Oracle` answering many clients over HTTP, concurrent requests batched into shared
forwards (docs/serve.md). The app needs the `serve` extra (fastapi, uvicorn, httpx); this package's
`__init__` imports none of them, so `ao --help` and `import activation_oracles` stay fast."""

from .client import Client, RequestError
from .limits import LimitError, Limits

__all__ = ["Client", "LimitError", "Limits", "RequestError"]
