"""The anonymous captioners: the group captioner (a frozen VLM sees a whole seed group and writes one caption with
placeholders), the single-image captioner (fine-tuned with TRL on the groups' (image, caption) pairs, or the released
adapter), their versioned prompts, and their quality measures. Modules are imported where used, so the pipeline's
command line stays light.
"""
