"""The API's typed request and response models (pydantic): the field names of `Oracle.ask/score/collect`.

What a client cannot send, by construction: code, pickles, file paths (no `target_adapter`, no `source`
other than the base weights, no `matcher`), precomputed vectors. Unknown fields are refused (422), so a
misspelt option is not silently ignored."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from ..oracle import ALIGNS, CONTROLS, MODES
from ..steering import CHOICE_METHODS


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: StrictStr
    content: StrictStr


TokenIds = Annotated[list[StrictInt], Field(min_length=1)]
Messages = Annotated[list[Message], Field(min_length=1)]
OneContext = StrictStr | Messages | TokenIds
Context = OneContext | Annotated[list[OneContext], Field(min_length=1)]
# 'all' | 'last' | 'A:B' | 'N,M,...' (as `ao ask --positions`), an index, or a list of indices
Positions = StrictStr | StrictInt | Annotated[list[StrictInt], Field(min_length=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: Context = Field(description="text (a user turn of the chat template; raw=true: plain text), a "
                             "messages list, token ids, or a list of these")
    layer: StrictInt | None = Field(None, description="source layer (a block index); overrides layer_percent")
    layers: Annotated[list[StrictInt], Field(min_length=1)] | None = Field(
        None, description="several source layers at once (a multi-layer oracle)")
    layer_percent: float | None = Field(None, ge=0, le=100, description="source layer as % of the depth")
    positions: Positions = Field("all", description="'all', 'last', 'A:B', 'N,M,...', an index or a list")
    raw: bool = False


class _Query(_Request):
    question: StrictStr | Annotated[list[StrictStr], Field(min_length=1)]
    mode: Literal[MODES] = "full"
    coefficient: float | None = Field(None, description="injection scale (default: the adapter's)")
    control: Literal[CONTROLS] | None = None
    unrelated_context: OneContext | None = None
    unrelated_align: Literal[ALIGNS] = "proportional"

    @field_validator("coefficient")
    @classmethod
    def _finite(cls, v):
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class AskRequest(_Query):
    """`Oracle.ask`'s arguments."""

    max_new_tokens: StrictInt = Field(40, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0, le=100)
    num_samples: StrictInt = Field(1, ge=1)
    return_logprobs: bool = False
    group_samples: bool = False


class ScoreRequest(_Query):
    """`Oracle.score`'s arguments."""

    choices: Annotated[list[StrictStr], Field(min_length=2)] = ["Yes", "No"]
    method: Literal[CHOICE_METHODS] = "auto"


class ActivationsRequest(_Request):
    """`Oracle.collect`'s arguments (base weights only), and how to send the vectors back."""

    encoding: Literal["base64", "list"] = Field(
        "base64", description="base64: little-endian float32 bytes with their shape; list: nested JSON numbers")


class ViewRequest(BaseModel):
    """The live page's request: `ao view` on one text."""

    model_config = ConfigDict(extra="forbid")
    context: StrictStr
    question: StrictStr | Annotated[list[StrictStr], Field(min_length=1)]
    kind: Literal["auto", "yesno", "open"] = "auto"
    choices: Annotated[list[StrictStr], Field(min_length=2)] = ["Yes", "No"]
    layer: StrictInt | None = None
    layer_percent: float | None = Field(None, ge=0, le=100)
    raw: bool = False
    max_new_tokens: StrictInt = Field(16, ge=1)


class Answer(BaseModel):
    """One `OracleAnswer` (the same fields; a test keeps them in step)."""

    text: str
    question: str
    context_index: int
    positions: list[int]
    layer: int
    mode: str = "full"
    sample_index: int = 0
    control: str | None = None
    probs: dict[str, float] | None = None
    choice_mass: float | None = None
    logprob: float | None = None
    tokens: list[str] | None = None
    token_logprobs: list[float] | None = None
    agreement: float | None = None
    layers: list[int] | None = None



class Answers(BaseModel):
    answers: list[Answer]


class Vectors(BaseModel):
    shape: list[int]
    dtype: str = "float32"
    data: str | list[list[float]]  # base64 of little-endian bytes, or nested lists


class ContextVectors(BaseModel):
    context_index: int
    ids: list[int]
    positions: list[int]
    layers: dict[int, Vectors]


class ActivationsResponse(BaseModel):
    contexts: list[ContextVectors]


class ViewResponse(BaseModel):
    html: str  # the viewer's panels for this text (`ao view`'s page body), HTML-escaped server-side
    tokens: int  # tokens shown
    kinds: list[str]
