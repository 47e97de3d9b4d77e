"""What one request may ask of the server: per-request caps, checked before the request costs a forward."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class LimitError(ValueError):
    """A request over one of the server's limits (HTTP 413): names the field, the limit and the value."""

    def __init__(self, field: str, limit: int, value: int, what: str):
        self.field, self.limit, self.value = field, limit, value
        super().__init__(f"{field}: {what} {value} is over this server's limit of {limit}")


@dataclass(frozen=True)
class Limits:
    """Per-request caps (each set by an `ao serve --max-...` flag)."""

    context_tokens: int = 2048  # tokens of all the request's contexts together
    contexts: int = 16  # contexts in one request
    positions: int = 1024  # positions read over all its queries (one query per position in mode "tokens")
    questions: int = 16  # questions in one request
    question_chars: int = 2000  # characters of one question
    choices: int = 16  # answer choices of a score request
    max_new_tokens: int = 64  # the largest max_new_tokens an ask request may set
    samples: int = 8  # the largest num_samples
    body_bytes: int = 1 << 20  # size of a request's JSON body

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {name}={value!r} must be a positive integer")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def check_request(self, call: dict) -> None:
        """The caps that need no tokenizer: counts and sizes of what the request names (413 at once)."""
        contexts = call.get("context")
        n_contexts = len(contexts) if _is_context_list(contexts) else 1
        _cap("context", n_contexts, self.contexts, "number of contexts")
        questions = call.get("question")
        questions = [questions] if isinstance(questions, str) else list(questions or [])
        _cap("question", len(questions), self.questions, "number of questions")
        for q in questions:
            _cap("question", len(q), self.question_chars, "characters in a question")
        if "choices" in call:
            _cap("choices", len(call["choices"]), self.choices, "number of choices")
        if "max_new_tokens" in call:
            _cap("max_new_tokens", call["max_new_tokens"], self.max_new_tokens, "max_new_tokens")
        if "num_samples" in call:
            _cap("num_samples", call["num_samples"], self.samples, "num_samples")

    def check_plan(self, plan) -> None:
        """The caps known once the contexts are tokenized (`Oracle.*_many`'s `check`)."""
        _cap("context", plan.context_tokens, self.context_tokens, "context tokens")
        _cap("positions", plan.positions, self.positions, "positions read over all queries")


def _cap(field: str, value: int, limit: int, what: str) -> None:
    if value > limit:
        raise LimitError(field, limit, value, what)


def _is_context_list(context) -> bool:
    """A list of contexts, not one context given as a messages list or token ids."""
    if not isinstance(context, list) or not context:
        return False
    first = context[0]
    return isinstance(first, (str, list))
