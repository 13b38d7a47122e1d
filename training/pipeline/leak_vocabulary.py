"""The words a leak check never counts as leaked: function words, words about the picture itself, and the
relational vocabulary an anonymous caption is made of.

An anonymous caption says *how* things relate ("arranged in a row from smallest to largest") and hides *what* they
are behind `{Placeholder}`s. A literal description of the same image ("three red apples in a row") shares the
relational words with it by design, so only the remaining content words — objects, colours, materials — count as
leaks. The lists are short and hand-written on purpose (no NLP package or download is available offline): a word
belongs in `RELATIONAL_VOCABULARY` when it names an arrangement, a comparison, a count, a change or a position, not
a thing or how a thing looks.

Words are compared after `word_forms`: lowercase, with the plural endings -s, -es and -ies tried off (no other
lemmatisation: "ripening" and "ripe" stay different words).
"""

from __future__ import annotations


def word_forms(word: str) -> frozenset[str]:
    """`word` lowercased and the singulars it may be the plural of: `apples` -> {apples, apple, appl}.

    Two words are taken as the same word when their forms meet, so `apple`/`apples`, `box`/`boxes`,
    `berry`/`berries` and `glass`/`glasses` match. A false match is possible (`news`/`new`); words of three letters
    or fewer and words ending in `ss` keep their last letter (`bus`, `glass`).
    """
    word = word.lower()
    forms = {word}
    if len(word) > 3:
        if word.endswith("ies"):
            forms.add(word[:-3] + "y")
        if word.endswith("es"):
            forms.add(word[:-2])
        if word.endswith("s") and not word.endswith("ss"):
            forms.add(word[:-1])
    return frozenset(forms)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP_WORDS = _words(
    """
    a an the and or but nor so yet if then than that this these those there here where when while which who whom
    whose what why how as at by for from in into of off on onto out to up upon with without about against per via
    is are was were be been being am has have had having do does did doing will would shall should can could may
    might must it its itself they them their theirs he him his she her hers we us our ours you your yours i me my
    mine some any no not very too also just quite rather almost even still ever never always often again
    such own s t
    """
)
# Words about the picture rather than its content: a literal captioner says them as often as a caption does.
PICTURE_WORDS = _words(
    """
    image picture photo photograph photography shot scene view frame background foreground close closeup
    shown showing show shows depicted depicting depicts displayed displaying visible seen appear appears appearing
    featuring features feature plain simple
    """
)
RELATIONAL_VOCABULARY = _words(
    # arrangement and structure
    """
    arrange arranged arrangement arranging row rows column line lined grid array pattern sequence series order
    ordered orderly layout layer level tier stack stacked stacking pile piled tower ring loop spiral outline
    panel cell group grouped pair set cluster collection repeated repeat repeating repetition spaced spacing evenly
    regular regularly placed position positioned composition composed forming form formed make made making tracing
    trace traced mosaic nested nesting symmetry symmetric symmetrical mirror mirrored reflection reflected axis
    radial radiating around centre center central middle edge corner side end axes
    """
    # position
    """
    inside outside within between among above below under over beneath behind front beside next near far top
    bottom left right across along through apart together away toward towards onto
    """
    # comparison and quantity
    """
    same different difference identical similar alike unlike odd other another each every all both either neither
    only exactly single double multiple many few more most fewer less least several whole part half
    size sized large larger largest small smaller smallest big bigger biggest little tall taller tallest short
    shorter shortest long longer longest wide narrow increasing decreasing increase decrease growing grow grows
    shrinking shrink shrinks step steps gradually progressively equal equally count counting number numbered kind
    type version variation variant like
    """
    # change over time
    """
    time stage stages phase before after during then first second third last next final initial becoming becomes
    become turning turns change changes changing changed transform transformation transforming progression
    progress cycle state evolving evolution one two three four five six seven eight nine ten dozen
    """
    # generic stand-ins that name no particular thing
    """
    object thing item element piece unit shape figure instance example version copy copies
    """
)
IGNORED_WORDS = STOP_WORDS | PICTURE_WORDS | RELATIONAL_VOCABULARY


def is_ignored(word: str) -> bool:
    """Whether a leak check skips `word` (in any of its `word_forms`)."""
    return not word_forms(word).isdisjoint(IGNORED_WORDS)
