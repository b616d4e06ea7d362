"""OpenAI's request bodies, as the server accepts them: closed pydantic models.

A body is a closed set. A field the server does not know is refused (400, naming it), and an
OpenAI field it does not implement passes only at the value that means "off"; each request's
`refuse_unsupported` names the rest in a 400 (docs/api.md lists them). Messages and stream
options, parts of a body, may carry fields the server does not use."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from specialist.inference.logprobs import MAX_TOP_LOGPROBS
from specialist.serve.http import APIError


class _Lenient(BaseModel):
    # parts of a request (a message, stream options) may carry fields this server does not use
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, "only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class StreamOptions(_Lenient):
    include_usage: bool = False


def unsupported(param: str, why: str = "not supported by this server") -> APIError:
    return APIError(400, f"{param}: {why}", param=param, code="unsupported_parameter")


def _off(*values: Any, schema: dict[str, Any] | None = None, **constraints: Any) -> Any:
    """A field of OpenAI's this server does not implement: the request model accepts any value, so
    `refuse_unsupported` can name it in a 400; the OpenAPI document lists only the `values` that
    mean "off" (or the `schema` they meet), the ones a client can send."""
    return Field(None, json_schema_extra=schema or {"enum": list(values)}, **constraints)


class SamplingRequest(BaseModel):
    """The fields both completion routes share. A request body is a closed set: a field this
    server does not know is refused (400, naming it), and OpenAI's fields it does not implement
    are accepted only at the value that means "off" (see `refuse_unsupported`), so no option a
    client sends is silently dropped."""

    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**64)  # what both engines' generators accept
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, json_schema_extra={"enum": [1]})
    # accepted, and without effect on the answer
    user: str | None = None
    # OpenAI's, not implemented: only their "off" values pass
    frequency_penalty: float | None = _off(schema={"minimum": 0, "maximum": 0}, ge=-2.0, le=2.0)  # 0 and -0.0
    presence_penalty: float | None = _off(schema={"minimum": 0, "maximum": 0}, ge=-2.0, le=2.0)  # 0 and -0.0
    logit_bias: dict[str, float] | None = _off(None, {})

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise APIError(400, "at most 4 stop sequences are allowed", param="stop")
        return [s for s in stops if s]

    def refuse_unsupported(self) -> None:
        if self.n != 1:
            raise APIError(400, "n > 1 is not supported", param="n")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name):
                raise unsupported(name, "not supported by this server (leave it out or send 0)")
        if self.logit_bias:
            raise unsupported("logit_bias")


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    # not OpenAI's: false answers without retrieval on a server that has a knowledge base
    knowledge: bool = True
    # accepted, and without effect on the answer
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    # OpenAI's, not implemented: only their "off" values pass
    tools: list[dict[str, Any]] | None = _off(None, [])
    tool_choice: str | dict[str, Any] | None = _off(None, "none")
    functions: list[dict[str, Any]] | None = _off(None, [])
    function_call: str | dict[str, Any] | None = _off(None, "none")
    response_format: dict[str, Any] | None = _off(None, {"type": "text"})
    modalities: list[str] | None = _off(None, ["text"])
    audio: dict[str, Any] | None = _off(None)
    prediction: dict[str, Any] | None = _off(None)
    reasoning_effort: str | None = _off(None)
    web_search_options: dict[str, Any] | None = _off(None)

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise unsupported(name, "tool and function calling are not supported by this server")
        for name in ("tool_choice", "function_call"):
            if getattr(self, name) not in (None, "none"):
                raise unsupported(name, "tool and function calling are not supported by this server")
        if self.response_format not in (None, {"type": "text"}):
            raise unsupported("response_format", 'only {"type": "text"} is supported')
        if self.modalities not in (None, ["text"]):
            raise unsupported("modalities", 'only ["text"] is supported')
        for name in ("audio", "prediction", "reasoning_effort", "web_search_options"):
            if getattr(self, name) is not None:
                raise unsupported(name)
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs: needs logprobs: true", param="top_logprobs")


class CompletionRequest(SamplingRequest):
    # a text, or token ids (what evaluation harnesses send); a list holds one prompt
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)  # 0 with echo: score the prompt only
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    # OpenAI's, not implemented: only their "off" values pass
    best_of: int | None = _off(None, 1, ge=1)
    suffix: str | None = _off(None, "")

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.best_of not in (None, 1):
            raise unsupported("best_of", "best_of > 1 is not supported")
        if self.suffix:
            raise unsupported("suffix", "insertion (suffix) is not supported")
        if self.max_tokens == 0 and not self.echo:
            raise APIError(400, "max_tokens: 0 is allowed only with echo: true (scoring the prompt)",
                           param="max_tokens")


def require_unicode(value: Any, param: str = "") -> None:
    """JSON's \\uD800-style escapes decode to lone surrogates, which no tokenizer encodes and no
    response can echo as UTF-8: such a request is refused up front, naming the field."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise APIError(400, f"{param}: not valid Unicode text (a lone surrogate)", param=param,
                           code="invalid_unicode") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            require_unicode(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            require_unicode(item, f"{param}.{i}")
