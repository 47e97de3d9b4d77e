"""`ao serve`: one loaded `Oracle` answering many clients over HTTP, concurrent requests batched into shared
forwards (docs/serve.md). The app needs the `serve` extra (fastapi, uvicorn, httpx); this package's
`__init__` imports none of them, nor torch (the client's answers are the Oracle's own types), so that
`ao --help` and `import activation_oracles` stay fast."""

from ..lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"Client": ".client", "RequestError": ".client", "LimitError": ".limits",
                                      "Limits": ".limits"})

__all__ = ["Client", "LimitError", "Limits", "RequestError"]
