"""The instruction-following Qwen2.5-VL (with its language-model head): chat prompts over images, generation,
answer probabilities and supervised fine-tuning. Used by the evaluation's captioner and judge, the data pipeline's
filter and captioners, and the studies; relsim itself (`modeling_relsim`) reads a query token instead and never
generates.
"""
