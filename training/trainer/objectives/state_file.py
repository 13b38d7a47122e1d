"""`objective_state.safetensors`: which checkpoint's objective state fits a run's options, read from its header alone.

The objective options keep state across steps (the caption queue, the EMA teacher's weights, the prototypes), saved
beside the Trainer's files in every checkpoint. A run resumed with other options than it was trained with would load
a queue or prototype set of another size (or none at all) deep inside `Trainer.train`; [`objective_state_problem`]
says so first, in one line naming the file and the field, from the safetensors header only (no tensor is read), so
the resume check runs before any model is built. The tensor names are `TrainingObjectives.state()`'s:

- `prototypes.prototypes` `(num_prototypes, d)` and `prototypes.initialized`;
- `queue.embeds` `(caption_queue_size, d)`, `queue.ids` `(caption_queue_size,)`, `queue.pointer`, `queue.filled`;
- `ema.<parameter name>`, one per trainable parameter (the names depend on the model, so only their presence is
  checked here; `TrainingObjectives.load` compares every name and shape once the model exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open


OBJECTIVE_STATE_FILE = "objective_state.safetensors"

# each option with state: the prefix of its tensors, and the field that turns it on
STATEFUL_OPTIONS = (("prototypes", "num_prototypes"), ("queue", "caption_queue_size"), ("ema", "distill_alpha"))
# tensors whose leading size is an option's value
SIZED_TENSORS = (
    ("prototypes.prototypes", "num_prototypes"),
    ("queue.embeds", "caption_queue_size"),
    ("queue.ids", "caption_queue_size"),
)


def options_with_state(arguments: Any) -> list[str]:
    """The fields of `arguments` that are on and keep state in checkpoints (`ObjectiveTrainingArguments`; a plain
    `RelSimTrainingArguments` has every option off)."""
    return [field for _, field in STATEFUL_OPTIONS if getattr(arguments, field, 0)]


def read_tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a safetensors file, from its header.

    Raises:
        SafetensorError, OSError: the file is unreadable or cut short.
    """
    with safe_open(str(path), framework="pt") as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118 (no __iter__)


def objective_state_problem(folder: str | Path, arguments: Any) -> str | None:
    """Why `folder`'s objective state cannot resume a run with `arguments`' options, in one line naming the file
    and the field; None when it can (or when no option keeps state and the file is absent).

    Args:
        folder: a `checkpoint-N` folder.
        arguments: the resuming run's `ObjectiveTrainingArguments` (a plain `RelSimTrainingArguments`: every option
            off, so a checkpoint holding option state is refused).
    """
    path = Path(folder) / OBJECTIVE_STATE_FILE
    needed = options_with_state(arguments)
    if not path.is_file():
        if not needed:
            return None
        return (
            f"{OBJECTIVE_STATE_FILE} is missing, but this run's {', '.join(needed)} keep state in it; resume with the "
            "options the checkpoint was trained with"
        )
    try:
        shapes = read_tensor_shapes(path)
    except (SafetensorError, OSError) as error:
        return f"{OBJECTIVE_STATE_FILE} is damaged ({error})"
    for prefix, field in STATEFUL_OPTIONS:
        held = any(name.startswith(prefix + ".") for name in shapes)
        value = getattr(arguments, field, 0)
        if held and not value:
            return f"{OBJECTIVE_STATE_FILE} holds {prefix} state, but this run has that option off ({field}={value})"
        if value and not held:
            return f"{OBJECTIVE_STATE_FILE} has no {prefix} state, but this run has that option on ({field}={value})"
    for name, field in SIZED_TENSORS:
        value = getattr(arguments, field, 0)
        if name in shapes and shapes[name][:1] != (value,):
            return (
                f"{OBJECTIVE_STATE_FILE}: {name} has shape {shapes[name]}, but this run has {field}={value}; resume "
                f"with the {field} the checkpoint was trained with"
            )
    return None
