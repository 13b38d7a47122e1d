"""The filter's one question and its two answers, versioned: a changed wording is a new filter, so scores and
cached results carry `QUESTION_VERSION` and are never mixed across versions."""

from __future__ import annotations


QUESTION_VERSION = "relational-filter-v1"
# short on purpose: the fewer text tokens, the more the answer position reads the image (a tiny model learns faster)
RELATIONAL_QUESTION = "Do the parts of this image follow a relation or rule that other images could share? Yes or No."
ANSWERS = ("Yes", "No")  # P(yes) is the softmax over the first tokens of these, in this order
