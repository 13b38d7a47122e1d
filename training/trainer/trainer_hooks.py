"""Does the installed transformers Trainer still have the private steps relsim's objective options extend?

`ObjectiveTrainer` (`training.trainer.objectives.trainer`) overrides four private `Trainer` methods so that the
objective options' prototypes are clipped and logged with the model and their state travels with each checkpoint.
Private methods change between transformers minor releases (5.25 dropped a private `ProcessorMixin` step relsim once
extended): a renamed or unused step would make an override dead code and the options silently wrong. This check
inspects the names, the parameters and the training loop's calls without running anything; the paper's
`RelSimTrainer` extends none of them and so always works.
"""

from __future__ import annotations

import inspect
import re

from transformers import Trainer


# private Trainer step -> the parameters relsim's override takes, in order
EXTENDED_STEPS: dict[str, tuple[str, ...]] = {
    "_clip_grad_norm": ("model",),
    "_get_grad_norm": ("model", "grad_norm"),
    "_save_checkpoint": ("model", "trial"),
    "_load_from_checkpoint": ("resume_from_checkpoint", "model"),
}


def trainer_step_mismatches(trainer_class: type = Trainer) -> list[str]:
    """What differs between `trainer_class` and the private steps relsim extends, one sentence each (empty: fits)."""
    try:  # the training loop may sit in any base class
        source = "".join(inspect.getsource(base) for base in trainer_class.__mro__ if base is not object)
    except (OSError, TypeError) as error:
        return [f"the source of {trainer_class.__name__} cannot be read to find its calls ({error})"]
    problems = []
    for name, parameters in EXTENDED_STEPS.items():
        step = getattr(trainer_class, name, None)
        if not callable(step):
            problems.append(f"{trainer_class.__name__} has no {name}")
            continue
        found = tuple(inspect.signature(step).parameters)[1 : len(parameters) + 1]
        if found != parameters:
            problems.append(f"{trainer_class.__name__}.{name} takes {found}, relsim's override expects {parameters}")
        elif not re.search(rf"self\.{name}\(", source):
            problems.append(f"{trainer_class.__name__} no longer calls {name}")
    return problems


__all__ = ["EXTENDED_STEPS", "trainer_step_mismatches"]
