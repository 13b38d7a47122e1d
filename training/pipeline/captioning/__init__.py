"""The anonymous captioners: the group captioner (a frozen VLM sees a whole seed group and writes one caption with
placeholders), the single-image captioner (fine-tuned with TRL on the groups' (image, caption) pairs, or the released
adapter), their versioned prompts, their quality measures, and the bodies of `group-caption` and
`caption train|evaluate` (`commands`).
"""
