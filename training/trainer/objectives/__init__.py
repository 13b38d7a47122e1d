"""Optional training objectives beside the unique-caption InfoNCE (issue 17), each off by default and set by one
`ObjectiveTrainingArguments` field ([`arguments`]); [`trainer.ObjectiveTrainer`], a subclass of the paper's
`RelSimTrainer`, trains them (the paper's trainer and loss import nothing of this package):

- `intra_image_weight` — image–image contrastive term ([`intra_image.intra_image_contrastive`]);
- `distill_alpha` (with `ema_momentum`, `distill_ramp_steps`) — momentum distillation
  ([`momentum.MomentumTeacher`], soft targets mixed into the InfoNCE by [`contrastive.queued_distilled_info_nce`]);
- `caption_queue_size` — a FIFO queue of past caption embeddings as extra negatives ([`caption_queue.CaptionQueue`]);
- `num_prototypes` (with `prototype_weight`, `prototype_temperature`, `sinkhorn_iterations`, `sinkhorn_epsilon`) —
  swapped-prediction prototype alignment ([`prototypes.PrototypeAlignment`]).

[`training_objectives.TrainingObjectives`] holds their state for the trainer (queue, EMA weights, prototypes),
combines the terms and saves/restores that state with each checkpoint; [`state_file.objective_state_problem`] checks a
checkpoint's `objective_state.safetensors` against a run's options before resuming.
"""
