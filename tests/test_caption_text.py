import pytest

from training.caption_text import caption_placeholders, normalize_caption, still_quoted


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('"arrange {Object}s from smallest to largest"', "arrange {Object}s from smallest to largest"),
        # the official seed_group.json writes one caption with a period after the closing quote
        ('"a gathering of {Subjects} around {Context}.".', "a gathering of {Subjects} around {Context}."),
        ('"a gathering of {Subjects}".', "a gathering of {Subjects}."),
        ('"is it {Object}"?', "is it {Object}?"),
        ("  'a {Subject} over time'\n", "a {Subject} over time"),
        ("\u201ca nested {Object}\u201d", "a nested {Object}"),
        ("\u2018a nested {Object}\u2019", "a nested {Object}"),
        ('\u201ca mixed pair {Object}"', "a mixed pair {Object}"),
        ('""doubled {Object}""', "doubled {Object}"),
        ("\"'double then single'\"", "double then single"),
        ('"   padded {Object}  "', "padded {Object}"),
        ('"only opened {Object}', "only opened {Object}"),
        ('only closed {Object}".', "only closed {Object}."),
        ('"the word "{Word}" written in {Font}"', 'the word "{Word}" written in {Font}'),
        ("'{Subject}'s shadow on {Surface}'", "{Subject}'s shadow on {Surface}"),
        ('no quotes "inside" kept', 'no quotes "inside" kept'),
        ("{Subject}'s toys", "{Subject}'s toys"),
        ('"{A}" beside "{B}"', '"{A}" beside "{B}"'),
        ('"', ""),
        ('""', ""),
    ],
)
def test_captions_lose_their_wrapping_quotes(raw, clean):
    assert normalize_caption(raw) == clean


@pytest.mark.parametrize(
    ("caption", "quoted"),
    [
        ("a plain caption.", False),
        ('the word "{Word}" inside', False),
        ('"{A}" beside "{B}"', True),
        ('written as "{Word}".', True),
        ("'90s style {Object}", True),
    ],
)
def test_a_caption_still_beginning_or_ending_with_a_quote_is_detected(caption, quoted):
    assert still_quoted(caption) is quoted


def test_both_quoting_forms_of_the_official_seed_groups_are_removed():
    """The official seed_group.json wraps its 532 captions in two ways: `"..."` (531, e.g. group 0) and `"...".`
    (group 151)."""
    group_0 = (
        '"This image represents the geographical outline of {Country}, overlaid with the design of its national flag'
        ' to symbolize its identity and sovereignty."'
    )
    group_151 = (
        '"This image depicts a gathering of {Subjects} arranged around a table, engaging in a shared activity or'
        ' interaction, with various objects and elements representing {Context}.".'
    )
    cleaned = [normalize_caption(caption) for caption in (group_0, group_151)]
    assert cleaned == [group_0[1:-1], group_151[1:-2]]
    assert cleaned[1].endswith("representing {Context}.")
    assert not any(still_quoted(caption) for caption in cleaned)


@pytest.mark.parametrize(
    ("caption", "placeholders"),
    [("{Object}s and {Shape}s and {Object}s", ["Object", "Shape"]), ("no placeholder", [])],
)
def test_placeholders(caption, placeholders):
    assert caption_placeholders(caption) == placeholders


@pytest.mark.parametrize("caption", ["a {Object", "a Object}", "a {{Object}}", "an {} thing"])
def test_bad_placeholders_are_refused(caption):
    with pytest.raises(ValueError):
        caption_placeholders(caption)
