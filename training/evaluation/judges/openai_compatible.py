"""A judge behind any OpenAI-compatible chat-completions endpoint: OpenAI's GPT-4o as in the paper, or a local vLLM
or TGI server. Called through the `openai` client, whose retries back off exponentially (with jitter, honouring the
server's Retry-After) on timeouts, 408, 409, 429 and 5xx answers and dropped connections. Settings come from
arguments or the environment: RELSIM_JUDGE_BASE_URL (else OPENAI_BASE_URL, else OpenAI's), RELSIM_JUDGE_MODEL (else
gpt-4o) and RELSIM_JUDGE_API_KEY (else OPENAI_API_KEY)."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from typing import Any

import PIL.Image

from modeling_relsim.image_decoding import decode_image
from training.evaluation.judges.prompt import PROMPT_VERSION, RELATIONAL_SIMILARITY_QUESTION


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
    max_retries: retries of a failed request before its error is raised.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        max_retries: int = 6,
        timeout: float = 120.0,
    ) -> None:
        from openai import OpenAI

        self.base_url = base_url or os.environ.get("RELSIM_JUDGE_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        self.base_url = self.base_url or OPENAI_BASE_URL
        self.model = model or os.environ.get("RELSIM_JUDGE_MODEL") or "gpt-4o"
        api_key = api_key or os.environ.get("RELSIM_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if api_key is None:
            if self.base_url == OPENAI_BASE_URL:
                raise ValueError("OpenAI's endpoint needs a key: set RELSIM_JUDGE_API_KEY or OPENAI_API_KEY")
            api_key = "unused"  # local vLLM/TGI servers take any key
        self.client = OpenAI(base_url=self.base_url, api_key=api_key, max_retries=max_retries, timeout=timeout)

    def identity(self) -> dict[str, Any]:
        return {"judge": "openai-compatible", "base_url": self.base_url, "model": self.model, "prompt": PROMPT_VERSION}

    def ask(self, query: PIL.Image.Image, candidate: PIL.Image.Image) -> str:
        content = [
            {"type": "text", "text": "Image A:"},
            {"type": "image_url", "image_url": {"url": image_data_url(query)}},
            {"type": "text", "text": "Image B:"},
            {"type": "image_url", "image_url": {"url": image_data_url(candidate)}},
            {"type": "text", "text": RELATIONAL_SIMILARITY_QUESTION},
        ]
        response = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": content}], temperature=0.0, max_tokens=32
        )
        return response.choices[0].message.content or ""

    def ask_many(self, pairs: Sequence[tuple[PIL.Image.Image, PIL.Image.Image]]) -> list[str]:
        return [self.ask(query, candidate) for query, candidate in pairs]
