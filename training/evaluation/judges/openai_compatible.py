"""A judge behind any OpenAI-compatible chat-completions endpoint: OpenAI's GPT-4o as in the paper, or a local vLLM
or TGI server. Called through the `openai` client, whose retries back off exponentially (with jitter, honouring the
server's Retry-After) on timeouts, 408, 409, 429 and 5xx answers and dropped connections. A 200 response that holds
no readable answer (invalid JSON, no choices, empty content) is asked again a few times by our own bounded loop, then
reported as a `JudgeFailure` for that pair only: the other answers stand and a rerun asks it again. Settings come from
arguments or the environment: RELSIM_JUDGE_BASE_URL (else OPENAI_BASE_URL, else OpenAI's), RELSIM_JUDGE_MODEL (else
gpt-4o) and RELSIM_JUDGE_API_KEY (else OPENAI_API_KEY)."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import PIL.Image

from modeling_relsim.image_decoding import decode_image
from training.evaluation.judges.cache import JudgeFailure, MalformedAnswerError
from training.evaluation.judges.prompt import PROMPT_VERSION, RELATIONAL_SIMILARITY_QUESTION


logger = logging.getLogger(__name__)


OPENAI_BASE_URL = "https://api.openai.com/v1"


def image_data_url(image: PIL.Image.Image, max_side: int = 768) -> str:
    """A JPEG data URL of the image as every relsim path decodes it (transparency on white, 16-bit scaled); large
    images are shrunk first (aspect kept), as the endpoints downscale them anyway."""
    image = decode_image(image)
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), PIL.Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class OpenAICompatibleJudge:
    """Args:
    max_retries: the client's retries of a failed request (timeouts, 429, 5xx) before its error is raised.
    malformed_retries: how many times a 200 response without a readable answer is asked again.
    malformed_wait: seconds before the first such retry, doubled after each.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        max_retries: int = 6,
        timeout: float = 120.0,
        malformed_retries: int = 2,
        malformed_wait: float = 1.0,
    ) -> None:
        from openai import APIResponseValidationError, OpenAI

        self.base_url = base_url or os.environ.get("RELSIM_JUDGE_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        self.base_url = self.base_url or OPENAI_BASE_URL
        self.model = model or os.environ.get("RELSIM_JUDGE_MODEL") or "gpt-4o"
        api_key = api_key or os.environ.get("RELSIM_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if api_key is None:
            if self.base_url == OPENAI_BASE_URL:
                raise ValueError("OpenAI's endpoint needs a key: set RELSIM_JUDGE_API_KEY or OPENAI_API_KEY")
            api_key = "unused"  # local vLLM/TGI servers take any key
        if malformed_retries < 0:
            raise ValueError(f"malformed_retries must be 0 or more, got {malformed_retries}")
        self.malformed_retries = malformed_retries
        self.malformed_wait = malformed_wait
        self._malformed = (json.JSONDecodeError, APIResponseValidationError, MalformedAnswerError)
        self.client = OpenAI(base_url=self.base_url, api_key=api_key, max_retries=max_retries, timeout=timeout)

    def identity(self) -> dict[str, Any]:
        return {"judge": "openai-compatible", "base_url": self.base_url, "model": self.model, "prompt": PROMPT_VERSION}

    def ask(self, query: PIL.Image.Image, candidate: PIL.Image.Image) -> str:
        """The judge's answer text.

        Raises:
            MalformedAnswerError: every attempt came back without a readable answer.
            openai.APIError: the request failed after the client's retries (e.g. a 4xx).
        """
        content = [
            {"type": "text", "text": "Image A:"},
            {"type": "image_url", "image_url": {"url": image_data_url(query)}},
            {"type": "text", "text": "Image B:"},
            {"type": "image_url", "image_url": {"url": image_data_url(candidate)}},
            {"type": "text", "text": RELATIONAL_SIMILARITY_QUESTION},
        ]
        messages = [{"role": "user", "content": content}]
        for attempt in range(self.malformed_retries + 1):
            if attempt:
                time.sleep(self.malformed_wait * 2 ** (attempt - 1))
            try:
                response = self.client.chat.completions.create(
                    model=self.model, messages=messages, temperature=0.0, max_tokens=32
                )
                return answer_text(response)
            except self._malformed as error:
                problem = f"{type(error).__name__}: {error}"
                logger.warning(
                    "%s answered without a readable answer (attempt %d): %s", self.base_url, attempt + 1, problem
                )
        raise MalformedAnswerError(
            f"no readable answer from {self.base_url} in {attempt + 1} attempts; last: {problem}"
        )

    def ask_many(self, pairs: Sequence[tuple[PIL.Image.Image, PIL.Image.Image]]) -> Iterator[str | JudgeFailure]:
        """Answers pair by pair as they arrive; a pair without a readable answer yields a `JudgeFailure`."""
        for query, candidate in pairs:
            try:
                yield self.ask(query, candidate)
            except MalformedAnswerError as error:
                yield JudgeFailure(str(error))


def answer_text(response: object) -> str:
    """The text of a chat completion's first choice.

    Raises:
        MalformedAnswerError: the response is not a completion with a non-empty text answer.
    """
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedAnswerError(f"no choices in the response ({str(response)[:200]})")
    text = getattr(getattr(choices[0], "message", None), "content", None)
    if not isinstance(text, str) or not text.strip():
        raise MalformedAnswerError(f"no text in the first choice ({str(choices[0])[:200]})")
    return text
