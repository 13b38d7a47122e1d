"""The relational filter: a Qwen2.5-VL fine-tuned (TRL SFT) to answer one fixed question with "Yes" or "No", read
out as P(yes) from one forward pass, and evaluated against held-out human labels.

- `question`: the question and its answers; `arguments`: the filter's recipe; `rows`: labelled rows and SFT examples;
- `training`: the SFT; `scoring`: P(yes) per image; `evaluation`: agreement, P/R/F1, ROC-AUC, the threshold;
- `synthetic`: the offline filter on generated images; `commands`: the bodies of `filter train|evaluate`.
"""
