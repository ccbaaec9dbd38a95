"""Built-in text task `reviews`: synthetic product reviews rated 1 to 5 stars, generated in code.

Where the text comes from: nothing is downloaded and no corpus is bundled. Every sentence is
generated here from a small grammar (aspects, opinion words with a strength, negators, degree
adverbs, contrast connectives, verdict phrases) by a fixed-seed random generator, so the data set is
the same on every machine. The star rating is *computed* from the sentence's composition:

    clause score   = sign(neg) * degree * strength(adjective)     ("not very good" -> -1.5)
    "not" + strong = a weak opposite ("not amazing" -> -0.5, "not terrible" -> +0.5)
    "A but B", "although A , B", "A ; however B":  A counts 1/4, B counts fully
    verdicts ("i would buy it again", "i returned it") add +-1.5
    stars          = bucket of the summed score: <= -2.5 | <= -0.75 | < 0.75 | < 2.5 | higher

Getting the label right needs word order (negation scope, which side of "but" a clause is on,
intensifiers), and the five classes are ordinal, so a teacher's soft targets carry real information
("3 or 4 stars, surely not 1"). A deep, wide transformer learns the composition; a small one trained
on hard labels alone learns a rougher bag of words -- the room distillation needs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgekd.registry import Registry

#: built-in text tasks by name: fn(n, seed) -> (texts, labels, class_names)
TEXT_BUILTIN: Registry[Callable[..., tuple[list[str], np.ndarray, list[str]]]] = Registry("built-in text dataset")

ASPECTS = (
    "the battery", "the screen", "the price", "the delivery", "the sound", "the camera", "the case",
    "the keyboard", "the support team", "the packaging", "the charger", "the manual", "the app",
    "the fabric", "the size", "the color", "the lid", "the handle", "the motor", "the display",
)
SUBJECT_VERBS = ("is", "was", "seems", "felt", "looks", "turned out")
# adjective -> signed strength (weak = 1, strong = 2)
ADJECTIVES: dict[str, int] = {
    "good": 1, "nice": 1, "decent": 1, "fine": 1, "solid": 1, "pleasant": 1, "handy": 1, "reliable": 1,
    "great": 2, "excellent": 2, "amazing": 2, "superb": 2, "fantastic": 2, "perfect": 2, "brilliant": 2,
    "bad": -1, "poor": -1, "weak": -1, "flimsy": -1, "slow": -1, "noisy": -1, "cheap": -1, "mediocre": -1,
    "terrible": -2, "awful": -2, "horrible": -2, "useless": -2, "dreadful": -2, "broken": -2, "atrocious": -2,
}
DEGREES = {"": 1.0, "very": 1.5, "really": 1.5, "extremely": 1.5, "quite": 1.0, "rather": 1.0, "a bit": 0.5, "slightly": 0.5}
NEGATORS = ("not", "never", "hardly", "not at all")
VERDICTS = {
    "i would buy it again": 1.5, "i recommend it": 1.5, "my friends love it": 1.5, "worth every cent": 1.5,
    "i returned it": -1.5, "avoid this one": -1.5, "i want my money back": -1.5, "what a waste": -1.5,
}
FILLERS = ("honestly", "overall", "to be fair", "in my opinion", "after a week", "so far", "frankly")
CONTRASTS = ("but", "although", "however")
STARS = ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]


def _clause(rng: np.random.Generator) -> tuple[str, float]:
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    verb = SUBJECT_VERBS[rng.integers(len(SUBJECT_VERBS))]
    adj = list(ADJECTIVES)[rng.integers(len(ADJECTIVES))]
    strength = float(ADJECTIVES[adj])
    negated = rng.random() < 0.35
    degree = "" if negated and rng.random() < 0.5 else list(DEGREES)[rng.integers(len(DEGREES))]
    score = strength * DEGREES[degree]
    if negated:
        neg = NEGATORS[rng.integers(len(NEGATORS))]
        # negating a strong word leaves a weak opposite; negating a weak word flips it
        score = -0.5 * np.sign(strength) if abs(strength) >= 2 else -score
        # "not at all" follows the adjective: the negation's scope is not always to its right
        words = [aspect, verb, neg, degree, adj] if neg != "not at all" else [aspect, verb, degree, adj, "not at all"]
    else:
        words = [aspect, verb, degree, adj]
    return " ".join(w for w in words if w), float(score)


def _review(rng: np.random.Generator) -> tuple[str, float]:
    parts: list[str] = []
    score = 0.0
    if rng.random() < 0.3:
        parts.append(FILLERS[rng.integers(len(FILLERS))] + " ,")
    first, s1 = _clause(rng)
    form = rng.random()
    if form < 0.3:  # one clause
        parts.append(first)
        score += s1
    elif form < 0.5:  # "A and B": both count
        second, s2 = _clause(rng)
        parts += [first, "and", second]
        score += s1 + s2
    else:  # contrast: the clause after the connective dominates
        second, s2 = _clause(rng)
        kind = CONTRASTS[rng.integers(len(CONTRASTS))]
        if kind == "but":
            parts += [first, "but", second]
        elif kind == "although":
            parts += ["although", first, ",", second]
        else:
            parts += [first, "; however", second]
        score += 0.25 * s1 + s2
    if rng.random() < 0.35:
        verdict = list(VERDICTS)[rng.integers(len(VERDICTS))]
        parts.append(". " + verdict)
        score += VERDICTS[verdict]
    return " ".join(parts) + " .", score


def stars_from_score(score: float) -> int:
    """Bucket a composed score into 0..4 (1 to 5 stars)."""
    for label, upper in enumerate((-2.5, -0.75, 0.75, 2.5)):
        if score <= upper if label < 2 else score < upper:
            return label
    return 4


@TEXT_BUILTIN.register("reviews")
def generate_reviews(n: int = 6000, seed: int = 1234) -> tuple[list[str], np.ndarray, list[str]]:
    """`n` synthetic reviews with 1-5 star labels (see the module docstring for the grammar).

    Sampling is stratified by rejection so every star rating gets about n/5 reviews; the same
    (n, seed) always gives the same reviews in the same order.
    """
    rng = np.random.default_rng(seed)
    per_class = [n // 5 + (1 if k < n % 5 else 0) for k in range(5)]
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    guard = 0
    while any(per_class) and guard < 200 * n:
        guard += 1
        text, score = _review(rng)
        label = stars_from_score(score)
        if per_class[label] == 0 or text in seen:
            continue
        seen.add(text)
        per_class[label] -= 1
        texts.append(text)
        labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64), list(STARS)
