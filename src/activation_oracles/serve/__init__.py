"""`ao serve`: one loaded `Oracle` answering many clients over HTTP, concurrent requests batched into shared
forwards (docs/serve.md). The app needs the `serve` extra (fastapi, uvicorn, httpx); this package's
`__init__` imports none of them, so `ao --help` and `import activation_oracles` stay fast."""

from ..lazy import lazy_exports
from .limits import LimitError, Limits

# the client answers with `Oracle`'s answer classes, whose module imports torch: loaded on first use
__getattr__ = lazy_exports(__name__, {"Client": ".client", "RequestError": ".client"})

__all__ = ["Client", "LimitError", "Limits", "RequestError"]
