"""The HTML the study tabs show, built from escaped values only (file names, captions and annotator names can hold
anything), and the page script that turns keys into button clicks."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from training.pipeline.leak_check import CaptionCheck
from training.search.app import file_url


# y / n label an image, 1 / 2 / 0 answer an A/B trial; a key acts only while its button is on screen and the
# focus is not in a text field (typing a caption must not label anything)
KEYBOARD_SCRIPT = """
<script>
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
  const buttons = {y: "label-yes", n: "label-no", "1": "ab-choose-left", "2": "ab-choose-right", "0": "ab-neither"};
  const button = document.getElementById(buttons[event.key.toLowerCase()]);
  if (button && button.offsetParent !== null && !button.disabled) {
    event.preventDefault();
    button.click();
  }
});
</script>
"""


# small synthetic or large photos alike: the image to judge stays on screen beside its buttons
STUDY_STYLE = """
.study-image .relsim-hit, .study-query .relsim-hit { max-width: 300px; }
.study-image img, .study-query img { image-rendering: auto; }
"""


def image_card(path: str, caption: str | None = None) -> str:
    """One image through the app's file route, with an optional caption (escaped)."""
    label = html.escape(caption) if caption is not None else ""
    figure_caption = f"<figcaption>{label}</figcaption>" if caption is not None else ""
    return (
        f'<figure class="relsim-hit"><img src="{html.escape(file_url(path))}" alt="{label}" loading="lazy">'
        f"{figure_caption}</figure>"
    )


def label_panel(path: str | None, shown_name: str) -> str:
    if path is None:
        return '<p class="study-done">Every image is labelled. Thank you!</p>'
    return f'<div class="study-image" data-name="{html.escape(shown_name)}">{image_card(path, shown_name)}</div>'


def group_panel(urls: Sequence[str], files: Sequence[str | None], refused: Sequence[str | None] = ()) -> str:
    """The group's images; a URL without a local file, or a local entry refused (`refused`: why), is listed as text
    (never fetched by the page)."""
    cards = []
    reasons = list(refused) or [None] * len(urls)
    for url, path, reason in zip(urls, files, reasons, strict=True):
        if path is None:
            why = f"not served ({reason})" if reason else "not on this machine"
            cards.append(f'<figure class="relsim-hit missing"><figcaption>{html.escape(why)}: '
                         f"{html.escape(url)}</figcaption></figure>")  # fmt: skip
        else:
            cards.append(image_card(path, Path(path).name))
    return f'<div class="relsim-results">{"".join(cards)}</div>'


def leak_flags(check: CaptionCheck) -> str:
    """Markdown of the leak checker's verdict (problems quoted as code, so markup in them stays text)."""
    if check.ok:
        scope = "no leak against its images' descriptions" if check.described else "no descriptions to check leaks"
        return f"Leak check: **ok** (format fine; {scope})."
    problems = ", ".join(f"`{problem.replace('`', '')}`" for problem in check.problems)
    return f"Leak check: **flagged**: {problems}"


def neighbour_panel(paths: Sequence[str]) -> str:
    """One side of an A/B trial: images only. No method name, score, label or file name: nothing in the page says
    which method made the side."""
    cards = "".join(image_card(path) for path in paths)
    return f'<div class="relsim-results">{cards}</div>'
