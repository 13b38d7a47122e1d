"""Qwen2.5-VL chat over images: the evaluation's captioner (CLIP-T, Qwen-T) and local judge, the pipeline's filter
and captioners.

The prompt is built from the tokenizer's chat template and the PIL image processor, not the stock Qwen2.5-VL
processor, which cannot be built without torchvision.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import PIL.Image
import torch
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
from transformers.feature_extraction_utils import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.utils.logging import tqdm

from modeling_relsim.image_decoding import decode_image
from training.errors import loading_model
from training.vlm.adapters import merge_lora_adapter
from training.vlm.decoding import Decoding


logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<|image_pad|>"
TURN_END = "<|im_end|>"
QWEN2_5_VL_DEFAULT = "Qwen/Qwen2.5-VL-7B-Instruct"

# One user turn: its images (PIL images, or file paths decoded on the way in), then its text.
Conversation = tuple[Sequence[PIL.Image.Image], str]


class QwenVLChat:
    """A generating Qwen2.5-VL with its tokenizer and image processor: prompts, generation, answer probabilities.

    Args:
        max_pixels: every image is resized (aspect kept, LANCZOS) to at most this many pixels before patching.
    """

    def __init__(
        self,
        model: Qwen2_5_VLForConditionalGeneration,
        tokenizer,
        image_processor: Qwen2VLImageProcessorPil,
        model_name_or_path: str,
        max_pixels: int = 448 * 448,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_name_or_path = model_name_or_path
        self.max_pixels = max_pixels
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.turn_end_id = tokenizer.convert_tokens_to_ids(TURN_END)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str = QWEN2_5_VL_DEFAULT,
        device="cpu",
        dtype=torch.float32,
        max_pixels=448 * 448,
        adapter: str | None = None,
    ) -> QwenVLChat:
        """Loads a Qwen2.5-VL folder or hub id, optionally with a PEFT LoRA `adapter` (folder or hub id, e.g.
        thaoshibe/relsim-anonymous-caption-qwen25vl-lora) merged into its weights; adapters saved by transformers
        4.x have their keys moved to the 5.x layout first."""
        with loading_model(model_name_or_path, "the Qwen2.5-VL model", "--caption-model / --judge-model"):
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_name_or_path, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_name_or_path)
        if adapter is not None:
            model = merge_lora_adapter(model, adapter, base=model_name_or_path)
        return cls(model.to(device), tokenizer, image_processor, model_name_or_path, max_pixels)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Writes a folder `from_pretrained` loads: weights, tokenizer (with any added tokens), image processor."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        return directory

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _resized(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """Decoded as every relsim path decodes (transparency on white, 16-bit scaled), then resized keeping the
        aspect ratio: the judge's own resizing."""
        image = decode_image(image)
        factor = self.image_processor.patch_size * self.image_processor.merge_size
        height, width = smart_resize(
            image.height, image.width, factor=factor, min_pixels=factor * factor, max_pixels=self.max_pixels
        )
        return image if image.size == (width, height) else image.resize((width, height), PIL.Image.LANCZOS)

    def render_prompts(self, conversations: Sequence[Conversation]) -> tuple[list[str], BatchFeature]:
        """Each conversation as its prompt text (chat template, generation prompt, every image placeholder expanded
        to the image's token count) and the pixels of all images in order.

        Raises:
            UnreadableImageError: an image could not be decoded (it names the file).
        """
        texts, images = [], []
        for conversation_images, prompt in conversations:
            content = [{"type": "image"} for _ in conversation_images] + [{"type": "text", "text": prompt}]
            texts.append(
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
                )
            )
            images += [self._resized(image) for image in conversation_images]
        if not images:  # text-only turns
            return texts, BatchFeature({})
        pixels = self.image_processor(images=images, do_resize=False, return_tensors="pt")
        tokens_per_image = (pixels["image_grid_thw"].prod(-1) // self.image_processor.merge_size**2).tolist()
        expanded, image_index = [], 0
        for text in texts:
            pieces = text.split(IMAGE_TOKEN)
            rendered = pieces[0]
            for piece in pieces[1:]:
                rendered += IMAGE_TOKEN * tokens_per_image[image_index] + piece
                image_index += 1
            expanded.append(rendered)
        if image_index != len(images):
            raise ValueError(f"the chat template rendered {image_index} image placeholders for {len(images)} images")
        return expanded, pixels

    def build_batch(self, conversations: Sequence[Conversation]) -> BatchFeature:
        """One user turn per conversation: its images, then its text; left padded, so every prompt ends at the last
        position, where the answer's first token is predicted."""
        texts, pixels = self.render_prompts(conversations)
        tokens = self.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
        return BatchFeature(
            {
                "input_ids": tokens["input_ids"],
                "attention_mask": tokens["attention_mask"],
                # image tokens are type 1: without this the model skips the M-RoPE positions of the images
                "mm_token_type_ids": (tokens["input_ids"] == self.image_token_id).int(),
                **pixels,
            }
        )

    def _on_device(self, batch: BatchFeature) -> BatchFeature:
        batch = batch.to(self.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        return batch

    def _generated_ids(
        self,
        conversations: Sequence[Conversation],
        decoding: Decoding,
        batch_size: int,
        show_progress: bool,
        suppress_token_ids: Sequence[int] = (),
    ) -> list[torch.Tensor]:
        """The new tokens of every conversation, one `(batch, new tokens)` tensor per `generate` call."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        outputs = []
        starts = range(0, len(conversations), batch_size)
        for batch_index, start in enumerate(tqdm(starts, desc="generating", unit="batch", disable=not show_progress)):
            batch = self._on_device(self.build_batch(conversations[start : start + batch_size]))
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                if decoding.seed is not None:
                    torch.manual_seed(decoding.seed + batch_index)
                extra = {"suppress_tokens": list(suppress_token_ids)} if suppress_token_ids else {}
                output = self.model.generate(
                    **batch, **decoding.generate_kwargs(), **extra, pad_token_id=self.tokenizer.pad_token_id
                )
            outputs.append(output[:, batch["input_ids"].shape[1] :].cpu())
        return outputs

    @torch.inference_mode()
    def generate(
        self,
        conversations: Sequence[Conversation],
        max_new_tokens: int = 64,
        decoding: Decoding | None = None,
        batch_size: int = 8,
        show_progress: bool = False,
    ) -> list[str]:
        """One answer per conversation, `batch_size` conversations per `generate` call (left padded).

        Greedy unless `decoding` says otherwise; `decoding` overrides `max_new_tokens` when given. Under greedy
        decoding a conversation's answer does not depend on its batch; seeded sampling repeats for the same
        conversations, batch size and seed.
        """
        decoding = decoding or Decoding(max_new_tokens=max_new_tokens)
        answers: list[str] = []
        for output in self._generated_ids(conversations, decoding, batch_size, show_progress):
            answers += self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return answers

    def stop_token_ids(self) -> set[int]:
        """The tokens that end an answer: the generation config's end-of-sequence ids and the turn end."""
        configured = self.model.generation_config.eos_token_id
        configured = [] if configured is None else [configured] if isinstance(configured, int) else configured
        return {*configured, self.turn_end_id}

    def image_placeholder_ids(self) -> list[int]:
        """The vision placeholder tokens (image/video pads, vision start/end) this tokenizer has: an answer holding
        one would be read as an image slot when scored."""
        names = (IMAGE_TOKEN, "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
        vocabulary = self.tokenizer.get_vocab()
        return [vocabulary[name] for name in names if name in vocabulary]

    @torch.inference_mode()
    def generate_token_ids(
        self,
        conversations: Sequence[Conversation],
        decoding: Decoding,
        batch_size: int = 8,
        show_progress: bool = False,
    ) -> list[list[int]]:
        """Like `generate`, but each answer as the token ids that were drawn, up to and including the token that
        ended it (absent when the answer ran to `max_new_tokens`): exactly what `sequence_log_likelihoods` scores,
        with no round trip through text (decoding and re-tokenizing can change the tokens). The vision placeholder
        tokens are never drawn (`image_placeholder_ids`), so every answer can be scored."""
        stops = self.stop_token_ids()
        answers = []
        placeholders = self.image_placeholder_ids()
        for output in self._generated_ids(conversations, decoding, batch_size, show_progress, placeholders):
            for row in output.tolist():
                end = next((position for position, token in enumerate(row) if token in stops), None)
                answers.append(row if end is None else row[: end + 1])
        return answers

    def _answer_ids(self, answer: str | Sequence[int], end_turn: bool) -> list[int]:
        if isinstance(answer, str):
            ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            return [*ids, self.turn_end_id] if end_turn else ids
        return [int(token) for token in answer]

    @torch.inference_mode()
    def sequence_log_likelihoods(
        self,
        conversations: Sequence[Conversation],
        answers: Sequence[str | Sequence[int]],
        batch_size: int = 8,
        end_turn: bool = False,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """How likely each answer is after its conversation's prompt, by teacher forcing: one forward per batch.

        Args:
            answers: one per conversation, as text (tokenized on its own, as the SFT batches tokenize answers) or as
                token ids (`generate_token_ids`' output, scored exactly as drawn).
            end_turn: append the turn end `<|im_end|>` to text answers, scoring "this answer, and nothing more".

        Returns:
            `(len(conversations),)` float32 on the CPU: the sum over the answer's tokens of log p(token | images,
            prompt, the answer's earlier tokens); 0 for an empty answer. Prompt and answer are left padded as one
            sequence, so every answer ends at the last position and only its logits are computed.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(answers) != len(conversations):
            raise ValueError(
                f"{len(answers)} answers for {len(conversations)} conversations; give one per conversation"
            )
        placeholders = set(self.image_placeholder_ids())
        scores = []
        starts = range(0, len(conversations), batch_size)
        for start in tqdm(starts, desc="scoring answers", unit="batch", disable=not show_progress):
            texts, pixels = self.render_prompts(conversations[start : start + batch_size])
            prompt_ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            answer_ids = [self._answer_ids(answer, end_turn) for answer in answers[start : start + batch_size]]
            for position, ids in enumerate(answer_ids, start=start):
                if placeholders.intersection(ids):
                    raise ValueError(
                        f"answer {position} holds vision placeholder tokens {sorted(placeholders.intersection(ids))},"
                        " which the model would read as image slots; answers must be text"
                    )
            sequences = [prompt + answer for prompt, answer in zip(prompt_ids, answer_ids, strict=True)]
            length = max(map(len, sequences))
            pad_id = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad_id] * (length - len(ids)) + ids for ids in sequences])
            batch = BatchFeature(
                {
                    "input_ids": input_ids,
                    "attention_mask": torch.tensor([[0] * (length - len(ids)) + [1] * len(ids) for ids in sequences]),
                    "mm_token_type_ids": (input_ids == self.image_token_id).int(),
                    **pixels,
                }
            )
            longest = max(map(len, answer_ids))
            # the last `longest + 1` positions predict every answer token (the first from the prompt's last token)
            logits = self.model(**self._on_device(batch), use_cache=False, logits_to_keep=longest + 1).logits
            log_probabilities = logits.float()[:, :-1].log_softmax(-1)
            for row, ids in enumerate(answer_ids):
                predicted = log_probabilities[row, longest - len(ids) :]
                targets = torch.tensor(ids, dtype=torch.long, device=predicted.device)
                scores.append(predicted.gather(-1, targets[:, None]).sum().cpu())
        if not scores:
            return torch.empty(0)
        return torch.stack(scores).float()

    def answer_token_ids(self, answers: Sequence[str]) -> list[int]:
        """The first token of each answer as the assistant would write it; they must differ."""
        if len(answers) < 2:
            raise ValueError(f"answer_probabilities needs at least two answers, got {list(answers)}")
        first_ids = []
        for answer in answers:
            ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"answer {answer!r} tokenizes to nothing")
            first_ids.append(ids[0])
        if len(set(first_ids)) != len(first_ids):
            tokens = self.tokenizer.convert_ids_to_tokens(first_ids)
            raise ValueError(
                f"answers {list(answers)} share a first token ({tokens}); choose answers whose first tokens differ"
            )
        return first_ids

    @torch.inference_mode()
    def answer_probabilities(
        self,
        conversations: Sequence[Conversation],
        answers: Sequence[str] = ("Yes", "No"),
        batch_size: int = 16,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """How likely each answer is, from one forward pass per batch and no generation.

        Returns:
            `(len(conversations), len(answers))` float32 on the CPU, each row a softmax over the logits of the
            answers' first tokens at the position right after the generation prompt (rows sum to 1).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        answer_ids = torch.tensor(self.answer_token_ids(answers))
        probabilities = []
        starts = range(0, len(conversations), batch_size)
        for start in tqdm(starts, desc="scoring", unit="batch", disable=not show_progress):
            batch = self._on_device(self.build_batch(conversations[start : start + batch_size]))
            # left padding puts every prompt's last token at the last position: only its logits are needed
            logits = self.model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
            probabilities.append(logits.float()[:, answer_ids.to(logits.device)].softmax(-1).cpu())
        if not probabilities:
            return torch.empty(0, len(answers))
        return torch.cat(probabilities)
